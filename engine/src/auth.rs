//! Users and their credentials. The default user `guest`/`guest` exists unless the config
//! removes it and, as in RabbitMQ, is accepted only from loopback addresses. Other users come
//! from the config file. Read-only after start-up; one copy per shard.

use std::collections::HashMap;
use std::net::IpAddr;

/// Why a login was refused (the message is safe to show the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

/// One configured user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// The user table.
#[derive(Debug, Clone)]
pub struct Users {
    passwords: HashMap<String, String>,
}

/// The user RabbitMQ and Ferry create by default.
pub const GUEST: &str = "guest";

impl Users {
    /// `guest`/`guest` (unless `users` redefines it) plus `users`.
    pub fn new(users: &[User]) -> Self {
        let mut passwords = HashMap::from([(GUEST.to_owned(), GUEST.to_owned())]);
        for user in users {
            passwords.insert(user.name.clone(), user.password.clone());
        }
        Users { passwords }
    }

    /// Checks a login from `peer`. A missing login means the default user (RabbitMQ's STOMP
    /// `default_user`), so clients that send no credentials connect as guest from loopback.
    pub fn check(&self, login: Option<&str>, passcode: Option<&str>, peer: IpAddr) -> Result<String, AuthError> {
        let (login, passcode) = match login {
            Some(login) => (login, passcode.unwrap_or("")),
            None => (GUEST, passcode.unwrap_or(GUEST)),
        };
        let refused = || AuthError(format!("Access refused for user '{login}'"));
        let expected = self.passwords.get(login).ok_or_else(refused)?;
        if !constant_time_eq(expected.as_bytes(), passcode.as_bytes()) {
            return Err(refused());
        }
        if login == GUEST && !peer.is_loopback() {
            return Err(AuthError("user 'guest' can only connect via localhost".to_owned()));
        }
        Ok(login.to_owned())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_only_from_loopback() {
        let users = Users::new(&[]);
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let remote: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(users.check(Some("guest"), Some("guest"), lo).is_ok());
        assert!(users.check(None, None, lo).is_ok());
        assert!(users.check(Some("guest"), Some("guest"), remote).is_err());
        assert!(users.check(Some("guest"), Some("bad"), lo).is_err());
    }

    #[test]
    fn configured_users() {
        let users = Users::new(&[User { name: "alice".into(), password: "secret".into() }]);
        let remote: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(users.check(Some("alice"), Some("secret"), remote), Ok("alice".into()));
        assert!(users.check(Some("alice"), Some("nope"), remote).is_err());
        assert!(users.check(Some("bob"), Some("secret"), remote).is_err());
    }
}
