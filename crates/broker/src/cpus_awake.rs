//! `runtime.keep_cpus_awake`: a CPU latency request the node holds for as
//! long as it runs, so that idle CPUs poll instead of sleeping.
//!
//! Linux takes such requests (PM QoS) on [`CPU_LATENCY_FILE`]: a writer
//! gives the most microseconds a CPU may take to wake, as a binary `i32`,
//! and the request stands until the file is closed. The kernel keeps the
//! smallest of all open requests; with 0, no CPU enters a sleep state and
//! idle CPUs spin in the kernel's polling loop, where a wake-up is a flag
//! seen at once instead of an interrupt to a halted CPU (in a virtual
//! machine, an exit to the hypervisor and back).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

/// Where Linux takes CPU latency requests.
pub const CPU_LATENCY_FILE: &str = "/dev/cpu_dma_latency";

/// A held request for CPUs that never sleep; dropping it withdraws it.
#[derive(Debug)]
pub struct CpusAwake {
    _file: File,
}

impl CpusAwake {
    /// Asks Linux, through [`CPU_LATENCY_FILE`], to keep every CPU awake
    /// until this is dropped.
    pub fn hold() -> io::Result<CpusAwake> {
        CpusAwake::hold_at(Path::new(CPU_LATENCY_FILE))
    }

    /// [`CpusAwake::hold`] on another file (tests).
    fn hold_at(path: &Path) -> io::Result<CpusAwake> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        // Microseconds a CPU may take to wake: none. The kernel takes
        // exactly four bytes in the machine's order.
        file.write_all(&0i32.to_ne_bytes())?;
        Ok(CpusAwake { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn the_request_is_four_bytes_of_zero() {
        let dir = std::env::temp_dir().join(format!("strata-cpus-awake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cpu_dma_latency");
        std::fs::write(&path, [0xffu8; 8]).expect("file");
        let held = CpusAwake::hold_at(&path).expect("held");
        assert_eq!(std::fs::read(&path).expect("read")[..4], [0, 0, 0, 0]);
        drop(held);
        let missing = CpusAwake::hold_at(&dir.join("absent")).expect_err("no such file");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// Where this process may write the real file (Linux, as root), the
    /// kernel's current limit, read back from it, is 0 while the request is
    /// held. Elsewhere, holding fails rather than pretending.
    #[test]
    fn the_kernel_keeps_cpus_awake_while_the_request_is_held() {
        let writable = OpenOptions::new().write(true).open(CPU_LATENCY_FILE).is_ok();
        let held = CpusAwake::hold();
        if !writable {
            assert!(held.is_err(), "held a request on a file that cannot be written");
            return;
        }
        let _held = held.expect("held");
        let mut limit = [0u8; 4];
        File::open(CPU_LATENCY_FILE).and_then(|mut f| f.read_exact(&mut limit)).expect("read the limit");
        assert_eq!(i32::from_ne_bytes(limit), 0, "the kernel's CPU latency limit while held");
    }
}
