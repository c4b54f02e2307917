use crate::{Diagnostic, Fleet};
pub(crate) fn parse(_s: &[(String, String)], _env: Option<&str>, _d: &mut Vec<Diagnostic>) -> Option<Fleet> { todo!() }
