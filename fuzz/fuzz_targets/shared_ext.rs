#![no_main]
//! Decodes arbitrary bytes as a SharedExtension; whatever parses must re-emit and re-parse equal.
use libfuzzer_sys::fuzz_target;
use loci_wire::shared_ext::SharedExtension;
use loci_wire::Wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = SharedExtension::parse(data) {
        let again = SharedExtension::parse(&v.to_bytes()).expect("re-emitted bytes must parse");
        assert_eq!(again, v);
    }
});
