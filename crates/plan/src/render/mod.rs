//! Human renderings of a plan: terminal tables, a Markdown report and a Graphviz graph.

mod dot;
mod markdown;
mod table;

pub use dot::dot;
pub use markdown::markdown;
pub use table::table;
