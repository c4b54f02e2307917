//! stub
use crate::Plan;
/// stub
pub fn dot(_p: &Plan) -> String {
    String::new()
}
