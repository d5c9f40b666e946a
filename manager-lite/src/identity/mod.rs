//! Passwords and the failed-login throttle: pure logic, no store, no HTTP.

pub mod password;
pub mod throttle;
