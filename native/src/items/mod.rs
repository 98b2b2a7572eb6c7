//! Listing and reading items: a source (directory or object store) listed like Spark's
//! `binaryFile` reader, an existing Parquet table read as one item per row, and the labels
//! that go with each item.

pub mod labels;
pub mod source;
pub mod table;

pub use labels::{label_names, LabelRule};
pub use source::{Listing, Source, SourceItem};
pub use table::{TableColumns, TableRow};
