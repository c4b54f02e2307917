//! stub
use crate::Plan;
/// stub
pub fn table(_p: &Plan) -> String {
    String::new()
}
