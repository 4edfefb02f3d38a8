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

/// CPU time used so far by this process and by the Postgres server, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTime {
    pub shoal_ms: f64,
    pub postgres_ms: f64,
}

impl CpuTime {
    pub fn now() -> Self {
        Self {
            shoal_ms: process_cpu_ms(),
            postgres_ms: postgres_cpu_ms(),
        }
    }

    /// The CPU time used between `before` and `self`.
    pub fn since(self, before: Self) -> Self {
        Self {
            shoal_ms: self.shoal_ms - before.shoal_ms,
            postgres_ms: self.postgres_ms - before.postgres_ms,
        }
    }
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

/// The CPU time of one local Postgres server, in ms: its postmaster (whose children's time,
/// once they have ended, counts in its own) and every live child (backends, autovacuum,
/// WAL writer...). `backend_pid` is any backend of the server (`pg_backend_pid()`). NaN when
/// the server is not on this machine. Other servers on the machine do not count.
pub fn postgres_server_cpu_ms(backend_pid: i32) -> f64 {
    let Some(postmaster) = Process::new(backend_pid)
        .and_then(|backend| backend.stat())
        .ok()
        .filter(|stat| stat.comm == "postgres")
        .map(|stat| stat.ppid)
    else {
        return f64::NAN;
    };
    let Ok(processes) = procfs::process::all_processes() else {
        return f64::NAN;
    };
    let ticks = procfs::ticks_per_second() as f64;
    processes
        .flatten()
        .filter_map(|process| process.stat().ok())
        .filter(|stat| stat.comm == "postgres")
        .map(|stat| {
            if stat.pid == postmaster {
                let reaped = (stat.cutime + stat.cstime).max(0) as f64 * 1000.0 / ticks;
                cpu_ms(&stat) + reaped
            } else if stat.ppid == postmaster {
                cpu_ms(&stat)
            } else {
                0.0
            }
        })
        .sum()
}
