//! Storage rules a test may break on purpose, to prove that the simulator's sweeps catch the
//! holes they open. Without the `inject-bugs` feature the type has no fields, so a production
//! build cannot turn any of them on.

/// Deliberately broken storage rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Directories created for the log and snapshots are not made durable in their parent,
    /// so a power loss soon after the first start can take the whole log with it.
    #[cfg(feature = "inject-bugs")]
    pub skip_directory_sync: bool,
    /// Only a record cut short (or a tail of zeros) counts as a torn write; a record with a
    /// zeroed sector inside is taken for corruption and the node refuses to start.
    #[cfg(feature = "inject-bugs")]
    pub torn_write_only_as_a_clean_cut: bool,
}

impl InjectedBugs {
    /// Every rule kept.
    pub const NONE: InjectedBugs = InjectedBugs {
        #[cfg(feature = "inject-bugs")]
        skip_directory_sync: false,
        #[cfg(feature = "inject-bugs")]
        torn_write_only_as_a_clean_cut: false,
    };
}
