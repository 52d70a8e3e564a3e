//! Fuzzes the batch reader with arbitrary bytes: splitting, validating,
//! stamping and decoding must never panic, and a batch that validates must
//! still validate after stamping (the stamped fields are outside the CRC).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in strata_batch::split_batches(data) {
        let Ok((header, bytes)) = item else { break };
        assert_eq!(header.total_len(), bytes.len());
        let mut stamped = bytes.to_vec();
        strata_batch::stamp(&mut stamped, 42, 7);
        let again = strata_batch::validate(&stamped).expect("stamping keeps a valid batch valid");
        assert_eq!((again.base_offset, again.partition_leader_epoch), (42, 7));
        if let Ok(records) = strata_batch::decode_records(&Bytes::copy_from_slice(bytes)) {
            let mut n = 0;
            for record in records {
                let Ok(record) = record else { break };
                assert!(record.offset >= header.base_offset);
                assert!(record.offset <= header.last_offset());
                n += 1;
            }
            assert!(n <= header.record_count);
        }
    }
});
