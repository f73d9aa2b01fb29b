//! Finding and stopping an agent left running by an orchestrator that died (a crash,
//! `kill -9`, an OOM kill): what is recorded about an agent when it starts, and the
//! guard that tells its process group from an unrelated one that reuses the number.
//!
//! A process id alone is not an identity: after the agent and its group are gone
//! the kernel may hand the number to another process. So an agent is recorded as
//! its process group id, the start time of its leader (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot) and the boot id
//! (`/proc/sys/kernel/random/boot_id`). The group is treated as ours only on the
//! same boot and when its leader, if still there, started at the recorded tick; a
//! group whose leader exited but whose members remain still holds the number (the
//! kernel does not reuse a pid while a process group of that id exists), so its
//! members are ours when none of them started before the leader did.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::process::live_group_members;

/// How long [`AgentHandle::kill`] waits for the killed group's processes to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often [`AgentHandle::kill`] looks whether the group is gone.
const KILL_POLL: Duration = Duration::from_millis(10);

/// What identifies a running agent's process group across a restart of the
/// orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHandle {
    /// The process group id (the agent's own pid: it leads its group).
    pub pgid: i32,
    /// When the group's leader started, in clock ticks since boot.
    pub start_ticks: u64,
    /// The boot the agent ran in.
    pub boot_id: String,
}

/// What [`AgentHandle::kill`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// Nothing of the agent was left (or the number belongs to someone else now).
    Gone,
    /// The group was killed; this many processes were in it.
    Killed(usize),
    /// The group was signalled but some processes outlived the wait.
    Survivors(usize),
}

impl AgentHandle {
    /// The handle of the process group led by `pid`, read from `/proc`; `None` when
    /// the process is gone already or `/proc` cannot be read.
    pub fn of_leader(pid: i32) -> Option<Self> {
        Some(Self {
            pgid: pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id()?,
        })
    }

    /// The live processes of this agent's group, when the group is still this
    /// agent's (see the module documentation); empty otherwise.
    pub fn survivors(&self) -> Vec<i32> {
        if self.pgid <= 1 || boot_id().as_deref() != Some(self.boot_id.as_str()) {
            return Vec::new();
        }
        let members = live_group_members(self.pgid);
        if members.is_empty() {
            return members;
        }
        match start_ticks(self.pgid) {
            // The leader is there: it must be the one recorded.
            Some(ticks) if members.contains(&self.pgid) => {
                if ticks == self.start_ticks {
                    members
                } else {
                    Vec::new()
                }
            }
            // The leader exited; its group's members started after it did.
            _ => {
                let ours = members
                    .iter()
                    .all(|pid| start_ticks(*pid).is_none_or(|t| t >= self.start_ticks));
                if ours { members } else { Vec::new() }
            }
        }
    }

    /// Kills what is left of this agent's process group (SIGKILL) and waits until
    /// its processes are gone (up to a bound). Does nothing when the group is gone
    /// or no longer this agent's.
    pub async fn kill(&self) -> Reaped {
        let members = self.survivors();
        if members.is_empty() {
            return Reaped::Gone;
        }
        match killpg(Pid::from_raw(self.pgid), Signal::SIGKILL) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Reaped::Gone,
            Err(error) => {
                tracing::warn!(pgid = self.pgid, error = %error, "cannot kill an orphaned agent's process group");
                return Reaped::Survivors(members.len());
            }
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            let left = live_group_members(self.pgid);
            if left.is_empty() {
                return Reaped::Killed(members.len());
            }
            if tokio::time::Instant::now() >= deadline {
                return Reaped::Survivors(left.len());
            }
            tokio::time::sleep(KILL_POLL).await;
        }
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of its
/// `stat`), when it exists.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, possibly containing spaces) the
    // fields continue from the third: state is 3, starttime is 22.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// This boot's id.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kills_the_recorded_group_and_refuses_another_start_time() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        let handle = AgentHandle::of_leader(pid).expect("the child's stat is readable");
        assert_eq!(handle.survivors(), vec![pid]);

        // The same number with another start time is someone else's process.
        let impostor = AgentHandle {
            start_ticks: handle.start_ticks + 1,
            ..handle.clone()
        };
        assert!(impostor.survivors().is_empty());
        assert_eq!(impostor.kill().await, Reaped::Gone);
        let other_boot = AgentHandle {
            boot_id: "another-boot".to_owned(),
            ..handle.clone()
        };
        assert_eq!(other_boot.kill().await, Reaped::Gone);
        assert!(child.try_wait().unwrap().is_none(), "the child still runs");

        // Killing reaps nothing here (we are its parent), so wait for the status.
        let kill = handle.kill();
        let (reaped, status) = tokio::join!(kill, child.wait());
        assert_eq!(reaped, Reaped::Killed(1));
        assert!(!status.unwrap().success());
        assert_eq!(handle.kill().await, Reaped::Gone);
    }
}
