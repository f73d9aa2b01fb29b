//! Confinement of an agent process: resource limits and Landlock filesystem rules,
//! applied in the child between `fork` and `exec`.
//!
//! The Landlock ruleset is built in the orchestrator (opening the allowed paths and
//! adding rules allocates, which is not allowed after `fork`); the child only calls
//! `setrlimit`, `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` on the
//! ruleset's file descriptor — three plain system calls. Landlock is best effort:
//! [`ConfinementLevel`] says what the kernel actually enforces.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr,
};

/// The newest Landlock ABI whose filesystem rights this module asks for.
const TARGET_ABI: ABI = ABI::V5;

/// System paths an agent may read and execute but not write.
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Paths an agent may write besides its workspace and home.
pub const SYSTEM_READ_WRITE: &[&str] = &["/dev/null"];

/// Resource limits of one agent process (and, through inheritance, its children).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU time in seconds (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL a second later.
    pub cpu_seconds: Option<u64>,
    /// Virtual address space in bytes (`RLIMIT_AS`).
    pub address_space_bytes: Option<u64>,
    /// Processes of the agent's user (`RLIMIT_NPROC`; not enforced for root).
    pub max_processes: Option<u64>,
    /// Largest file the agent may write, in bytes (`RLIMIT_FSIZE`): SIGXFSZ past it.
    pub file_size_bytes: Option<u64>,
    /// Wall-clock time, enforced by the orchestrator (stop with escalation).
    pub wall_clock: Option<Duration>,
}

/// Which filesystem paths an agent may use; everything else is denied where Landlock
/// is available.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsPolicy {
    /// Read, write, create and execute beneath these (the worktree, the private home).
    pub read_write: Vec<PathBuf>,
    /// Read and execute beneath these (system paths, the agent's own binary).
    pub read_only: Vec<PathBuf>,
}

impl FsPolicy {
    /// The worktree and home read-write, [`SYSTEM_READ_ONLY`] and `extra_read_only`
    /// read-only, [`SYSTEM_READ_WRITE`] read-write.
    pub fn standard(worktree: &Path, home: &Path, extra_read_only: &[PathBuf]) -> Self {
        let mut read_write = vec![worktree.to_path_buf(), home.to_path_buf()];
        read_write.extend(SYSTEM_READ_WRITE.iter().map(PathBuf::from));
        let mut read_only: Vec<PathBuf> = SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect();
        read_only.extend(extra_read_only.iter().cloned());
        Self {
            read_write,
            read_only,
        }
    }
}

/// The filesystem confinement actually applied to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfinementLevel {
    /// Landlock enforces every filesystem right this module asks for.
    Full,
    /// Landlock runs with an older ABI: some rights (for example rename across
    /// directories, truncate, device ioctl) are not restricted.
    Partial,
    /// No filesystem confinement: Landlock is unavailable or was not requested.
    None,
}

impl ConfinementLevel {
    /// `full`, `partial` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Partial => "partial",
            Self::None => "none",
        }
    }
}

/// Why confinement could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot build the Landlock ruleset")]
    Ruleset(#[source] landlock::RulesetError),
    #[error("cannot open {path} for a Landlock rule")]
    OpenPath {
        path: PathBuf,
        #[source]
        source: landlock::PathFdError,
    },
}

/// The Landlock support of the running kernel, as [`ConfinementLevel`] a session
/// would get.
pub fn landlock_support() -> ConfinementLevel {
    static SUPPORT: OnceLock<ConfinementLevel> = OnceLock::new();
    *SUPPORT.get_or_init(probe_landlock)
}

fn probe_landlock() -> ConfinementLevel {
    let full = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|ruleset| ruleset.create());
    if full.is_ok() {
        return ConfinementLevel::Full;
    }
    let best_effort = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|ruleset| ruleset.create());
    match best_effort.map(Option::<OwnedFd>::from) {
        Ok(Some(_)) => ConfinementLevel::Partial,
        _ => ConfinementLevel::None,
    }
}

/// What the child applies before `exec`, prepared in the orchestrator.
pub(crate) struct Prepared {
    ruleset: Option<OwnedFd>,
    level: ConfinementLevel,
    limits: Limits,
}

impl Prepared {
    pub(crate) fn level(&self) -> ConfinementLevel {
        self.level
    }
}

/// Builds the Landlock ruleset for `policy` (when `landlock` and the kernel allow)
/// and keeps `limits` for the child. Paths that do not exist are left out.
pub(crate) fn prepare(
    policy: &FsPolicy,
    limits: &Limits,
    landlock: bool,
) -> Result<Prepared, ConfineError> {
    let level = if landlock {
        landlock_support()
    } else {
        ConfinementLevel::None
    };
    let ruleset = if level == ConfinementLevel::None {
        None
    } else {
        build_ruleset(policy)?
    };
    let level = if ruleset.is_some() {
        level
    } else {
        ConfinementLevel::None
    };
    Ok(Prepared {
        ruleset,
        level,
        limits: limits.clone(),
    })
}

fn build_ruleset(policy: &FsPolicy) -> Result<Option<OwnedFd>, ConfineError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|ruleset| ruleset.create())
        .map_err(ConfineError::Ruleset)?;
    let rules = policy
        .read_write
        .iter()
        .map(|path| (path, all))
        .chain(policy.read_only.iter().map(|path| (path, read)));
    for (path, access) in rules {
        if !path.exists() {
            continue;
        }
        let fd = PathFd::new(path).map_err(|source| ConfineError::OpenPath {
            path: path.clone(),
            source,
        })?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(ConfineError::Ruleset)?;
    }
    Ok(Option::<OwnedFd>::from(ruleset))
}

/// Makes the child apply `prepared` between `fork` and `exec`. `prepared` must
/// outlive the spawn (its ruleset descriptor is used by the child).
#[allow(unsafe_code)]
pub(crate) fn install(command: &mut tokio::process::Command, prepared: &Prepared) {
    let ruleset_fd = prepared.ruleset.as_ref().map(AsRawFd::as_raw_fd);
    let limits = &prepared.limits;
    let cpu = limits.cpu_seconds.map(|s| (s, s.saturating_add(1)));
    let address_space = limits.address_space_bytes.map(|b| (b, b));
    let processes = limits.max_processes.map(|n| (n, n));
    let file_size = limits.file_size_bytes.map(|b| (b, b));
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are allowed. It captures only `Copy` integers,
    // allocates nothing, takes no locks, and calls only `setrlimit`, `prctl` and the
    // raw `landlock_restrict_self` system call (all async-signal-safe system calls);
    // `io::Error::last_os_error` reads `errno` without allocating. The ruleset
    // descriptor stays open in the parent until the spawn returns (`prepared` is
    // borrowed across it), so the number the child uses is valid.
    unsafe {
        command.pre_exec(move || {
            let set = |resource, limit: Option<(u64, u64)>| -> std::io::Result<()> {
                if let Some((soft, hard)) = limit {
                    let value = libc::rlimit {
                        rlim_cur: soft as libc::rlim_t,
                        rlim_max: hard as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &value) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            };
            set(libc::RLIMIT_CPU, cpu)?;
            set(libc::RLIMIT_AS, address_space)?;
            set(libc::RLIMIT_NPROC, processes)?;
            set(libc::RLIMIT_FSIZE, file_size)?;
            if let Some(fd) = ruleset_fd {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
