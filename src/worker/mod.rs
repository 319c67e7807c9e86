//! Background work: the helpers every worker loop shares — waking on a notification channel or
//! a poll ([`wakeup`]) and keeping a claim's lease alive ([`lease`]) — and the cleaner.

pub mod cleaner;
pub mod lease;
pub mod wakeup;
