//! A YAML node tree where every node keeps its source span.
