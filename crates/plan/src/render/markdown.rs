//! stub
use crate::Plan;
/// stub
pub fn markdown(_p: &Plan) -> String {
    String::new()
}
