//! A deserializer that misbehaves on purpose, for the host's isolation tests.
//!
//! It decodes interaction JSON like `interaction-json`, except for payloads
//! containing a marker: `@@TRAP@@` panics, `@@LOOP@@` never returns,
//! `@@OOM@@` allocates until the memory limit stops it.

use interaction::Interaction;
use wafer_sdk::{Config, Deserializer, Error};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Faulty {
    hoard: Vec<Vec<u8>>,
}

impl Deserializer for Faulty {
    type Record<'a> = Interaction<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Faulty { hoard: Vec::new() })
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Interaction<'a>, Error> {
        if contains(payload, b"@@TRAP@@") {
            panic!("faulty guest: trap marker found");
        }
        if contains(payload, b"@@LOOP@@") {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        if contains(payload, b"@@OOM@@") {
            loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            }
        }
        serde_json::from_slice::<Interaction<'a>>(payload)?.validate()
    }
}

wafer_sdk::deserializer!(Faulty);
