//! What the benchmarks read about this machine from `/proc` (through `procfs`): the CPU time of
//! this process and of the Postgres server, this process's peak RSS, and the load average.

use procfs::process::{ClearRefs, Process, Stat};
use procfs::{Current, LoadAverage};

/// The 1-minute load average, NaN if it cannot be read.
pub fn load_average() -> f64 {
    LoadAverage::current().map_or(f64::NAN, |load| f64::from(load.one))
}

/// Resets the kernel's peak RSS of this process (`VmHWM`) to the current RSS.
pub fn reset_peak_rss() {
    if let Err(error) = Process::myself().and_then(|me| me.clear_refs(ClearRefs::PeakRSS)) {
        eprintln!("cannot reset the peak RSS ({error}); it covers the whole process life");
    }
}

/// The peak RSS of this process (`VmHWM`) in KiB, 0 if it cannot be read.
pub fn peak_rss_kib() -> u64 {
    Process::myself()
        .and_then(|me| me.status())
        .ok()
        .and_then(|status| status.vmhwm)
        .unwrap_or(0)
}

/// User + system CPU time of a process, in ms.
fn cpu_ms(stat: &Stat) -> f64 {
    (stat.utime + stat.stime) as f64 * 1000.0 / procfs::ticks_per_second() as f64
}

/// The CPU time of this process so far, in ms (NaN if it cannot be read).
pub fn process_cpu_ms() -> f64 {
    Process::myself()
        .and_then(|me| me.stat())
        .map_or(f64::NAN, |stat| cpu_ms(&stat))
}

/// The CPU time of every `postgres` process on this machine (the server under test, if it is
/// local), in ms; processes that end while they are read are left out.
pub fn postgres_cpu_ms() -> f64 {
    let Ok(processes) = procfs::process::all_processes() else {
        return f64::NAN;
    };
    processes
        .flatten()
        .filter_map(|process| process.stat().ok())
        .filter(|stat| stat.comm == "postgres")
        .map(|stat| cpu_ms(&stat))
        .sum()
}

/// The CPU time so far of this process's threads whose name starts with `prefix` (a Tokio
/// runtime's threads are named by its builder), in ms (NaN if it cannot be read).
pub fn threads_cpu_ms(prefix: &str) -> f64 {
    let Ok(tasks) = Process::myself().and_then(|me| me.tasks()) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|task| task.stat().ok())
        .filter(|stat| stat.comm.starts_with(prefix))
        .map(|stat| cpu_ms(&stat))
        .sum()
}
