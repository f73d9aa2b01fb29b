//! The agent as a confined child process: its own process group, a cleared
//! environment plus an allow-list, a private home outside the workspace, stdin from
//! `/dev/null` (or a pipe the orchestrator owns), output captured line by line,
//! resource limits and Landlock (see [`crate::runtime::confine`]), a wall-clock
//! limit, and a stop that escalates from the agent's own interrupt to SIGKILL on the
//! whole group.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::confine::{self, ConfineError, ConfinementLevel, FsPolicy, Limits};
use super::event::{OutputStream, SessionEvent, Verdict};
use crate::adapters::Protocol;

/// Variables passed through from the orchestrator's environment when set; every
/// other variable of the orchestrator is withheld from agents.
pub const ENV_ALLOW_LIST: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` for agents when the orchestrator has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How often the stop escalation checks whether the group is gone.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long output is still read after the agent's process group is gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How the agent is asked to stop before it is terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupt {
    /// A signal sent to the agent's process group.
    Signal(Signal),
    /// Bytes written to the agent's stdin (needs [`StdinMode::Pipe`]), e.g. an RPC
    /// abort command; the pipe is closed after them, so an agent that reads commands
    /// until the end of its input ends too.
    Stdin(Vec<u8>),
}

/// The stop escalation: the agent's interrupt, then SIGTERM, then SIGKILL to the
/// whole process group, each followed by a wait for the group to be gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPolicy {
    pub interrupt: Interrupt,
    pub interrupt_wait: Duration,
    pub term_wait: Duration,
    pub kill_wait: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        Self {
            interrupt: Interrupt::Signal(Signal::SIGINT),
            interrupt_wait: Duration::from_secs(10),
            term_wait: Duration::from_secs(5),
            kill_wait: Duration::from_secs(5),
        }
    }
}

/// Where the agent's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null`: agents that wait for EOF on an open pipe never start otherwise.
    #[default]
    Null,
    /// A pipe the orchestrator owns (RPC modes, [`Interrupt::Stdin`]).
    Pipe,
}

/// Everything needed to start one agent process.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Variables the adapter adds on top of the allow-list and the home variables.
    pub env: Vec<(String, String)>,
    /// The workspace (the session's worktree); the agent's working directory.
    pub workdir: PathBuf,
    /// The session's private home and config directory; must lie outside `workdir`.
    /// Created when missing.
    pub home: PathBuf,
    pub limits: Limits,
    /// Filesystem rules applied with Landlock when `landlock` is true and the kernel
    /// supports it.
    pub fs: FsPolicy,
    pub landlock: bool,
    pub stdin: StdinMode,
    pub stop: StopPolicy,
    /// How the agent's output is parsed (and, for RPC modes, what is written to
    /// its stdin); the generic command adapter's by default.
    pub protocol: Protocol,
}

impl AgentSpec {
    /// A spec with the standard filesystem policy (workdir and home read-write,
    /// system paths and the program read-only), Landlock on, stdin from `/dev/null`,
    /// no limits and the default stop policy.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        workdir: impl Into<PathBuf>,
        home: impl Into<PathBuf>,
    ) -> Self {
        let program = program.into();
        let workdir = workdir.into();
        let home = home.into();
        let extra: Vec<PathBuf> = if program.is_absolute() {
            vec![program.clone()]
        } else {
            Vec::new()
        };
        Self {
            fs: FsPolicy::standard(&workdir, &home, &extra),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            program,
            workdir,
            home,
            limits: Limits::default(),
            landlock: true,
            stdin: StdinMode::Null,
            stop: StopPolicy::default(),
            protocol: Protocol::default(),
        }
    }

    /// When the working directory is a linked git worktree, lets the agent use git
    /// in it under Landlock: the repository's common git directory read-only
    /// (objects, refs, configuration) and the worktree's own administrative
    /// directory read-write (its `HEAD`, `index`, reflog). Other worktrees' files
    /// stay out of reach; committing (which writes objects and refs in the common
    /// directory) is left to the orchestrator. Returns whether it applied.
    pub fn allow_worktree_git(&mut self) -> bool {
        let Some(dirs) = super::worktree::git_dirs(&self.workdir) else {
            return false;
        };
        self.fs.read_only.push(dirs.common);
        self.fs.read_write.push(dirs.admin);
        true
    }
}

/// Why an agent process could not be started or managed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the agent's home {home} lies inside its workspace {workdir}")]
    HomeInsideWorkspace { home: PathBuf, workdir: PathBuf },
    #[error("cannot create the agent's home {path}")]
    CreateHome {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the confinement of {program}")]
    Confine {
        program: PathBuf,
        #[source]
        source: ConfineError,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the agent process {pid}")]
    Wait {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot signal the process group {pgid}")]
    Signal {
        pgid: i32,
        #[source]
        source: Errno,
    },
}

/// One line of the agent's output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: String,
}

/// The last step of the stop escalation that was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// The group was already gone.
    None,
    Interrupt,
    Term,
    Kill,
}

/// What a stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// The step after which the group was gone (or the last one tried).
    pub step: StopStep,
    /// Processes of the group still alive after the escalation (empty when it
    /// worked).
    pub survivors: Vec<i32>,
}

/// A running agent process and its captured output.
pub struct AgentProcess {
    child: Child,
    pgid: i32,
    lines: Option<mpsc::Receiver<OutputLine>>,
    stdin: Option<ChildStdin>,
    confinement: ConfinementLevel,
    exit: Option<ExitStatus>,
}

impl AgentProcess {
    /// Starts the agent described by `spec`. Must be called within a Tokio runtime
    /// (its output is read by tasks spawned there).
    pub fn spawn(spec: &AgentSpec) -> Result<Self, ProcessError> {
        if spec.home.starts_with(&spec.workdir) {
            return Err(ProcessError::HomeInsideWorkspace {
                home: spec.home.clone(),
                workdir: spec.workdir.clone(),
            });
        }
        let tmp = spec.home.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|source| ProcessError::CreateHome {
            path: tmp.clone(),
            source,
        })?;
        let prepared =
            confine::prepare(&spec.fs, &spec.limits, spec.landlock).map_err(|source| {
                ProcessError::Confine {
                    program: spec.program.clone(),
                    source,
                }
            })?;

        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.workdir)
            .env_clear()
            .envs(child_env(&spec.home, &tmp, &spec.env))
            .stdin(match spec.stdin {
                StdinMode::Null => Stdio::null(),
                StdinMode::Pipe => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        confine::install(&mut command, &prepared);
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let confinement = prepared.level();
        drop(prepared);

        // The process group id is the child's pid (`process_group(0)`); without a
        // valid one no signal may be sent (0 or -1 would reach other processes).
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .filter(|id| *id > 1)
            .ok_or_else(|| ProcessError::Spawn {
                program: spec.program.clone(),
                source: std::io::Error::other("the agent has no process id"),
            })?;
        let (tx, rx) = mpsc::channel(1024);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(stdout, OutputStream::Stdout, tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(stderr, OutputStream::Stderr, tx));
        }
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            pgid,
            lines: Some(rx),
            stdin,
            confinement,
            exit: None,
        })
    }

    /// The agent's process id, which is also its process group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The filesystem confinement applied to the agent.
    pub fn confinement(&self) -> ConfinementLevel {
        self.confinement
    }

    /// The pipe to the agent's stdin, with [`StdinMode::Pipe`].
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// The next output line; `None` once both streams are closed (or the lines were
    /// taken by [`run`]).
    pub async fn next_line(&mut self) -> Option<OutputLine> {
        match self.lines.as_mut() {
            Some(lines) => lines.recv().await,
            None => None,
        }
    }

    /// Waits for the agent process itself to exit (not its whole group).
    pub async fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| ProcessError::Wait {
                pid: self.pgid,
                source,
            })?;
        self.exit = Some(status);
        Ok(status)
    }

    /// The exit status, once the process has exited and was waited for.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Stops the whole process group: the policy's interrupt, then SIGTERM, then
    /// SIGKILL, each followed by its wait; returns which step was needed and any
    /// process of the group still alive at the end.
    pub async fn stop(&mut self, policy: &StopPolicy) -> Result<StopReport, ProcessError> {
        let steps = [
            (StopStep::Interrupt, policy.interrupt_wait),
            (StopStep::Term, policy.term_wait),
            (StopStep::Kill, policy.kill_wait),
        ];
        let mut reached = StopStep::None;
        for (step, wait) in steps {
            if self.group_gone()? {
                break;
            }
            reached = step;
            match step {
                StopStep::Interrupt => match &policy.interrupt {
                    Interrupt::Signal(signal) => self.signal_group(*signal)?,
                    Interrupt::Stdin(bytes) => {
                        if let Some(mut stdin) = self.stdin.take() {
                            // The agent may have closed its stdin; SIGTERM follows anyway.
                            let _ = stdin.write_all(bytes).await;
                            let _ = stdin.flush().await;
                        }
                    }
                },
                StopStep::Term => self.signal_group(Signal::SIGTERM)?,
                StopStep::Kill | StopStep::None => self.signal_group(Signal::SIGKILL)?,
            }
            let deadline = tokio::time::Instant::now() + wait;
            while !self.group_gone()? && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(STOP_POLL).await;
            }
        }
        self.group_gone()?;
        Ok(StopReport {
            step: reached,
            survivors: live_group_members(self.pgid),
        })
    }

    /// Whether the agent has exited (reaping it) and no live process of its group
    /// remains.
    fn group_gone(&mut self) -> Result<bool, ProcessError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|source| ProcessError::Wait {
                pid: self.pgid,
                source,
            })?;
        }
        Ok(self.exit.is_some() && live_group_members(self.pgid).is_empty())
    }

    fn signal_group(&self, signal: Signal) -> Result<(), ProcessError> {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal {
                pgid: self.pgid,
                source,
            }),
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.pgid > 0 && !live_group_members(self.pgid).is_empty() {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

/// The agent's environment: the allow-listed variables of the orchestrator, the
/// private home variables, then the adapter's additions.
fn child_env(home: &Path, tmp: &Path, extra: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = ENV_ALLOW_LIST
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| ((*name).into(), value)))
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("HOME".into(), home.into()));
    env.push(("XDG_CONFIG_HOME".into(), home.join(".config").into()));
    env.push(("XDG_CACHE_HOME".into(), home.join(".cache").into()));
    env.push(("XDG_DATA_HOME".into(), home.join(".local/share").into()));
    env.push(("TMPDIR".into(), tmp.into()));
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (name.into(), value.into())),
    );
    env
}

/// Forwards the lines of one output stream until it closes.
async fn pump(
    reader: impl AsyncRead + Unpin,
    stream: OutputStream,
    lines: mpsc::Sender<OutputLine>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if lines.send(OutputLine { stream, line }).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The live (not zombie) processes whose process group is `pgid`, read from `/proc`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name (in parentheses, possibly containing spaces):
            // state, ppid, pgrp, …
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
            group == Some(pgid) && !matches!(state, Some("Z" | "X" | "x"))
        })
        .collect()
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The agent exited by itself (or was killed by a resource limit).
    Exited,
    /// The run was cancelled and the agent stopped.
    Cancelled,
    /// The wall-clock limit was reached and the agent stopped.
    WallClock,
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Every event, in output order.
    pub events: Vec<SessionEvent>,
    /// Judged from the events; a cancelled or timed-out run is failed.
    pub verdict: Verdict,
    pub end: RunEnd,
    /// The agent's exit status (a signal for a process killed by a limit or a stop).
    pub exit: Option<ExitStatus>,
    pub confinement: ConfinementLevel,
    /// What the stop escalation did, for a cancelled or timed-out run.
    pub stop: Option<StopReport>,
}

/// Runs an agent to its end: spawns it, parses its output with the spec's
/// [`Protocol`] (answering on its stdin when the protocol does), calls `on_event`
/// for each event, stops it on `cancel` or at the wall-clock limit, kills what it
/// left in its process group after it exits, and judges the outcome from the events
/// (with the protocol's judge).
pub async fn run(
    spec: &AgentSpec,
    cancel: &CancellationToken,
    on_event: impl FnMut(&SessionEvent),
) -> Result<RunReport, ProcessError> {
    let process = AgentProcess::spawn(spec)?;
    run_spawned(process, spec, cancel, &CancellationToken::new(), on_event).await
}

/// [`run`] for an agent already started from `spec` with [`AgentProcess::spawn`]
/// (so the caller knows its process group and confinement first). When `force` is
/// cancelled by the time `cancel` is, the group is killed at once instead of
/// going through the stop policy.
pub async fn run_spawned(
    process: AgentProcess,
    spec: &AgentSpec,
    cancel: &CancellationToken,
    force: &CancellationToken,
    on_event: impl FnMut(&SessionEvent),
) -> Result<RunReport, ProcessError> {
    run_steered(process, spec, cancel, force, None, on_event).await
}

/// [`run_spawned`] that also writes every message arriving on `steer` to the
/// agent's stdin pipe while it runs (an RPC agent's commands, e.g. Pi's `steer`);
/// a message after the pipe was closed is dropped.
pub async fn run_steered(
    mut process: AgentProcess,
    spec: &AgentSpec,
    cancel: &CancellationToken,
    force: &CancellationToken,
    mut steer: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    mut on_event: impl FnMut(&SessionEvent),
) -> Result<RunReport, ProcessError> {
    let mut lines = process.lines.take();
    let mut events = Vec::new();
    let mut parser = spec.protocol.parser(&spec.workdir);
    if let Some(bytes) = parser.opening() {
        write_stdin(&mut process, &bytes, false).await;
    }
    // Returns what the parser wants written to the agent's stdin.
    let mut record = |line: OutputLine, events: &mut Vec<SessionEvent>| {
        let parsed = parser.parse(line.stream, &line.line);
        for event in parsed.events {
            on_event(&event);
            events.push(event);
        }
        (parsed.reply, parsed.close_stdin)
    };
    let deadline = spec
        .limits
        .wall_clock
        .map(|d| tokio::time::Instant::now() + d);
    let wall_clock = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(wall_clock);

    let mut end = RunEnd::Exited;
    loop {
        tokio::select! {
            line = recv(&mut lines) => match line {
                Some(line) => {
                    let (reply, close) = record(line, &mut events);
                    if reply.is_some() || close {
                        write_stdin(&mut process, reply.as_deref().unwrap_or_default(), close).await;
                    }
                }
                None => lines = None,
            },
            message = recv_steer(&mut steer) => match message {
                Some(bytes) => write_stdin(&mut process, &bytes, false).await,
                None => steer = None,
            },
            status = process.wait(), if process.exit.is_none() => {
                status?;
                break;
            }
            () = cancel.cancelled() => {
                end = RunEnd::Cancelled;
                break;
            }
            () = &mut wall_clock => {
                end = RunEnd::WallClock;
                break;
            }
        }
    }

    // Stop the agent (or whatever it left in its group), reading its output
    // meanwhile so it is never blocked on a full pipe.
    let policy = match end {
        RunEnd::Exited => StopPolicy {
            interrupt: Interrupt::Signal(Signal::SIGKILL),
            interrupt_wait: spec.stop.kill_wait,
            term_wait: Duration::ZERO,
            kill_wait: Duration::ZERO,
        },
        RunEnd::Cancelled if force.is_cancelled() => StopPolicy {
            interrupt: Interrupt::Signal(Signal::SIGKILL),
            interrupt_wait: spec.stop.kill_wait,
            term_wait: Duration::ZERO,
            kill_wait: Duration::ZERO,
        },
        RunEnd::Cancelled | RunEnd::WallClock => spec.stop.clone(),
    };
    let stop_report = {
        let stop = process.stop(&policy);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                report = &mut stop => break report?,
                // The agent is being stopped: what the parser would answer is moot.
                Some(line) = recv(&mut lines) => {
                    record(line, &mut events);
                }
            }
        }
    };
    if let Some(mut open) = lines.take() {
        let drain = async {
            while let Some(line) = open.recv().await {
                record(line, &mut events);
            }
        };
        // A process that left the group may hold the pipes open; stop reading then.
        let _ = tokio::time::timeout(OUTPUT_DRAIN, drain).await;
    }

    let exit = process.exit_status();
    let verdict = match end {
        RunEnd::Cancelled => Verdict::Failed {
            reason: "cancelled".to_owned(),
        },
        RunEnd::WallClock => Verdict::Failed {
            reason: format!(
                "the wall-clock limit of {:?} was reached",
                spec.limits.wall_clock.unwrap_or_default()
            ),
        },
        RunEnd::Exited => match (parser.judge(&events), exit.and_then(killed_by)) {
            (Verdict::Failed { reason }, Some(signal)) => Verdict::Failed {
                reason: format!("{reason}; the agent was killed by {signal}"),
            },
            (verdict, _) => verdict,
        },
    };
    Ok(RunReport {
        events,
        verdict,
        end,
        exit,
        confinement: process.confinement(),
        stop: (end != RunEnd::Exited).then_some(stop_report),
    })
}

/// Writes `bytes` to the agent's stdin pipe (when it has one), then closes it when
/// `close`. A write error means the agent closed its end: nothing to do.
async fn write_stdin(process: &mut AgentProcess, bytes: &[u8], close: bool) {
    if let Some(stdin) = process.stdin.as_mut()
        && !bytes.is_empty()
    {
        let _ = stdin.write_all(bytes).await;
        let _ = stdin.flush().await;
    }
    if close {
        process.stdin = None;
    }
}

async fn recv_steer(steer: &mut Option<mpsc::UnboundedReceiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match steer {
        Some(steer) => steer.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv(lines: &mut Option<mpsc::Receiver<OutputLine>>) -> Option<OutputLine> {
    match lines {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

/// The signal that killed a process, by name.
fn killed_by(status: ExitStatus) -> Option<&'static str> {
    use std::os::unix::process::ExitStatusExt;
    let signal = Signal::try_from(status.signal()?).ok()?;
    Some(signal.as_str())
}
