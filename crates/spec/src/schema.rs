//! JSON Schema of the fleet spec, for editors.
