//! Running agents on this machine: a git worktree per session, the agent as a
//! confined child process, the simulated agent, and the normalized events an
//! agent's output is parsed into.
//!
//! A session is put together from these pieces: [`worktree::WorktreeManager::create`]
//! prepares the workspace, [`process::run`] runs the agent in it and judges the
//! outcome from its event stream, and [`worktree::WorktreeManager::finish`] commits
//! the work (or keeps the worktree for inspection) by the cleanup policy.

pub mod confine;
pub mod event;
pub mod gate;
pub mod process;
pub mod reaper;
pub mod sim_agent;
pub mod worktree;
