//! Background work that is not dispatch or packaging: the cleaner.

pub mod cleaner;
