//! Fault injection for tests: the plan of a simulated crash, and the counter of durable
//! steps that every durable operation of the ledger (and of the consensus log) goes
//! through. A step is a `WriteBatch` write, a checkpoint creation, a DB creation or
//! open, a directory rename or removal, or a file copy; the caller performs it only if
//! [`Faults::step`] lets it.
//!
//! A planned crash ([`FaultPlan`]) fails its step and every later call, as a dead
//! process would; a transient fault ([`super::RocksOptions::transient_fault`]) fails
//! its step once, and the executor goes on.

use crate::error::ExecError;

/// Where a simulated crash happens (tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The durable step (counted from 1) that is not performed: it and every later call
    /// return [`ExecError::Injected`].
    pub crash_at_step: u64,
}

/// Counts durable steps and injects the planned fault.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    plan: Option<FaultPlan>,
    transient: Option<u64>,
    steps: u64,
    dead: Option<u64>,
    /// The largest `WriteBatch` written so far, bytes.
    largest_write: usize,
}

impl Faults {
    /// A counter for this plan.
    pub(crate) fn new(plan: Option<FaultPlan>) -> Faults {
        Faults {
            plan,
            transient: None,
            steps: 0,
            dead: None,
            largest_write: 0,
        }
    }

    /// The same, with a step that fails once.
    pub(crate) fn with_transient(mut self, step: Option<u64>) -> Faults {
        self.transient = step;
        self
    }

    /// Fails if a fault was injected already (the "process" is dead).
    pub(crate) fn alive(&self) -> Result<(), ExecError> {
        match self.dead {
            Some(step) => Err(ExecError::Injected(step)),
            None => Ok(()),
        }
    }

    /// Counts one durable step, which the caller performs only if this returns `Ok`.
    pub(crate) fn step(&mut self) -> Result<(), ExecError> {
        self.alive()?;
        self.steps += 1;
        if self.transient == Some(self.steps) {
            return Err(ExecError::Injected(self.steps));
        }
        if self.plan.is_some_and(|p| p.crash_at_step == self.steps) {
            self.dead = Some(self.steps);
            return Err(ExecError::Injected(self.steps));
        }
        Ok(())
    }

    /// Records a `WriteBatch` of `bytes` written.
    pub(crate) fn wrote(&mut self, bytes: usize) {
        self.largest_write = self.largest_write.max(bytes);
    }

    /// The largest `WriteBatch` written so far, bytes.
    pub(crate) fn largest_write(&self) -> usize {
        self.largest_write
    }

    /// Durable steps counted so far.
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }
}
