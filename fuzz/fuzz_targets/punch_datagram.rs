#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_core::fuzz_checks::punch_datagram(data);
});
