#![no_main]
//! Decodes arbitrary bytes as a ControlMessage; whatever parses must re-emit and re-parse equal.
use libfuzzer_sys::fuzz_target;
use loci_wire::message::ControlMessage;
use loci_wire::Wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = ControlMessage::parse(data) {
        let again = ControlMessage::parse(&v.to_bytes()).expect("re-emitted bytes must parse");
        assert_eq!(again, v);
    }
});
