//! `spec.user`: `UID[:GID]` or `NAME[:GROUP]`, as `podman run --user` and the
//! OCI image config's `User` take it. Names are looked up in the container's own
//! /etc/passwd and /etc/group when it starts, not here.

use std::fmt;
use std::str::FromStr;

/// A user or group: a number, or a name to look up inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(u32),
    Name(String),
}

/// A parsed `spec.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user: Id,
    /// `None`: the user's group from /etc/passwd (or 0 without an entry).
    pub group: Option<Id>,
}

/// The longest name useradd accepts.
const MAX_NAME: usize = 32;

fn id(text: &str, what: &str) -> Result<Id, String> {
    if text.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // 4294967295 is (uid_t)-1, "no change" to setuid: never a real id.
        return match text.parse::<u32>() {
            Ok(n) if n != u32::MAX => Ok(Id::Number(n)),
            _ => Err(format!(
                "{what} id {text} is out of range (0 to 4294967294)"
            )),
        };
    }
    let mut bytes = text.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok
        || text.len() > MAX_NAME
        || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "{text:?} is not a {what} name or id: a name is up to {MAX_NAME} letters, digits, \
             '_', '.' or '-', starting with a letter or '_'"
        ));
    }
    Ok(Id::Name(text.to_owned()))
}

impl FromStr for User {
    type Err = String;

    fn from_str(text: &str) -> Result<User, String> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        Ok(User {
            user: id(user, "user")?,
            group: group.map(|g| id(g, "group")).transpose()?,
        })
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Name(name) => f.write_str(name),
        }
    }
}

/// The same pattern for the JSON Schema.
pub(crate) const USER_PATTERN: &str =
    "^([0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31})(:([0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}))?$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_mixed_forms_parse() {
        let user: User = "1000:1000".parse().unwrap();
        assert_eq!(user.user, Id::Number(1000));
        assert_eq!(user.group, Some(Id::Number(1000)));
        let user: User = "www-data".parse().unwrap();
        assert_eq!(user.user, Id::Name("www-data".into()));
        assert_eq!(user.group, None);
        let user: User = "0:wheel".parse().unwrap();
        assert_eq!(user.group, Some(Id::Name("wheel".into())));
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for (text, says) in [
            ("", "user is empty"),
            ("1000:", "group is empty"),
            ("4294967295", "out of range"),
            ("99999999999", "out of range"),
            ("-bob", "not a user name"),
            ("bob:x:y", "not a group name"),
            ("a b", "not a user name"),
        ] {
            let error = text.parse::<User>().unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
