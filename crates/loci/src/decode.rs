//! `loci decode`: decode LISP messages from hex, for debugging captures by hand.

use std::io::Read;

use anyhow::{bail, Context};
use loci_wire::data::DataHeaderRepr;
use loci_wire::message::ControlMessage;
use loci_wire::Wire;

/// Decodes each hex string (or standard input when none is given) and prints the result.
pub fn run(args: &[String], data: bool) -> anyhow::Result<()> {
    let inputs = if args.is_empty() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        vec![s]
    } else {
        args.to_vec()
    };
    let mut failed = 0;
    for input in inputs {
        let bytes = parse_hex(&input)?;
        let result = if data {
            DataHeaderRepr::parse_noting(&bytes[..bytes.len().min(8)]).map(|(h, n)| format!("{h:#?}\nnotes: {n:?}"))
        } else {
            ControlMessage::parse_noting(&bytes).map(|(m, n)| format!("{}\n{m:#?}\nnotes: {n:?}", m.name()))
        };
        match result {
            Ok(text) => crate::out(&format!("{text}\n"))?,
            Err(e) => {
                failed += 1;
                crate::out(&format!("malformed: {e}\n"))?;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} message(s) did not decode");
    }
    Ok(())
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    hex::decode(clean).context("not a hex string")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("0x0a:0b 0c\n").unwrap(), [10, 11, 12]);
        assert!(parse_hex("zz").is_err());
    }
}
