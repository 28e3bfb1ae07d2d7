//! An image reference, `host[:port]/path[:tag][@sha256:hex]`, read with the
//! grammar of Docker's `distribution/reference`, except that berth has no
//! default registry: the first component must name one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The tag used when a reference names neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";
/// `distribution/reference`'s limit on the name (registry and path).
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

/// A parsed image reference. Its `Display` is the canonical form:
/// `registry/repository:tag`, `registry/repository@sha256:…`, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    /// Absent only when a digest is given without a tag.
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// The registry's host, with its port if one was given: `registry.example:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The path in the registry: `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when neither a tag nor a digest was given, `None` for a
    /// reference by digest alone.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// `sha256:<64 hex>` when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(text: &str) -> Result<ImageRef, String> {
        if text.is_empty() {
            return Err("the image reference is empty".to_owned());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?} contains spaces or control characters"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(text, digest)?)),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(tag[1..].to_owned()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            check_tag(text, tag)?;
        }
        let Some((registry, repository)) = name
            .split_once('/')
            .filter(|(first, _)| first.contains(['.', ':']) || *first == "localhost")
        else {
            return Err(short_name(text, name));
        };
        check_registry(text, registry)?;
        check_repository(text, repository)?;
        if name.len() > MAX_NAME {
            return Err(format!(
                "{text:?}: the name is {} characters long; the limit is {MAX_NAME}",
                name.len()
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }
}

fn short_name(text: &str, name: &str) -> String {
    let example = if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!(
        "{text:?} is a short name: write the registry too, e.g. {example} (berth has no default registry)"
    )
}

fn parse_digest(text: &str, digest: &str) -> Result<String, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!("{text:?}: the digest {digest:?} is not sha256:<64 hex digits> (the only algorithm berth reads)")
    })?;
    if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!(
            "{text:?}: the digest {digest:?} is not sha256:<64 lower-case hex digits>"
        ));
    }
    Ok(digest.to_owned())
}

fn check_tag(text: &str, tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.len() <= MAX_TAG
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?}: the tag {tag:?} is not valid; a tag is letters, digits, '_', '.' and '-', not starting with '.' or '-', at most {MAX_TAG} characters"
        ))
    }
}

fn check_registry(text: &str, registry: &str) -> Result<(), String> {
    let bad = || format!("{text:?}: {registry:?} is not a registry host[:port]");
    let (host, port) = match registry.find(']') {
        // An IPv6 address in brackets, then perhaps a port.
        Some(end) if registry.starts_with('[') => {
            let after = &registry[end + 1..];
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            (&registry[..=end], port)
        }
        _ => match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        },
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(inner) = host.strip_prefix('[') {
        // An IPv6 address in brackets.
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_repository(text: &str, repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if !path_component_ok(component) {
            let why = if component.chars().any(|c| c.is_ascii_uppercase()) {
                "repository names are lower-case"
            } else {
                "a path component is lower-case letters and digits, separated by '.', '_', '__' or dashes"
            };
            return Err(format!(
                "{text:?}: {component:?} is not a valid repository path component; {why}"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = component.chars().collect();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if expect_alnum {
            if !alnum(bytes[i]) {
                return false;
            }
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
        } else {
            let start = i;
            match bytes[i] {
                '.' => i += 1,
                '_' => {
                    i += 1;
                    if i < bytes.len() && bytes[i] == '_' {
                        i += 1;
                    }
                }
                '-' => {
                    while i < bytes.len() && bytes[i] == '-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            debug_assert!(i > start);
            expect_alnum = true;
        }
    }
    !component.is_empty() && !expect_alnum
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageRef, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ImageRef {
        match text.parse() {
            Ok(r) => r,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn a_full_reference_keeps_registry_port_path_tag_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("registry.example:5000/team/app:1.4@{digest}"));
        assert_eq!(r.registry(), "registry.example:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("1.4"));
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert_eq!(
            r.to_string(),
            format!("registry.example:5000/team/app:1.4@{digest}")
        );
    }

    #[test]
    fn the_tag_defaults_to_latest_unless_a_digest_pins_the_image() {
        assert_eq!(parse("localhost/app").to_string(), "localhost/app:latest");
        assert_eq!(parse("127.0.0.1:5000/a/b").tag(), Some("latest"));
        let digest = format!("sha256:{}", "0".repeat(64));
        let pinned = parse(&format!("docker.io/library/alpine@{digest}"));
        assert_eq!(pinned.tag(), None);
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/alpine@{digest}")
        );
    }

    #[test]
    fn short_names_are_refused_with_the_registry_to_write() {
        let e = "alpine".parse::<ImageRef>().unwrap_err();
        assert_eq!(
            e,
            "\"alpine\" is a short name: write the registry too, e.g. docker.io/library/alpine (berth has no default registry)"
        );
        let e = "team/app:1".parse::<ImageRef>().unwrap_err();
        assert!(e.contains("e.g. docker.io/team/app"), "{e}");
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "reg.example/App",
            "reg.example/app:",
            "reg.example/app:.x",
            "reg.example/app@sha256:abc",
            "reg.example/app@md5:0123",
            "reg.example:port/app",
            "reg.example/a//b",
            "reg.example/a-",
            "reg.example/ app",
            "-reg.example/app",
            "[::1/app",
            "[::1]x/app",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn separators_follow_the_docker_grammar() {
        for good in [
            "[::1]:5000/a",
            "[::1]/a",
            "r.io/a.b",
            "r.io/a_b",
            "r.io/a__b",
            "r.io/a---b",
            "r.io/a/b/c",
        ] {
            parse(good);
        }
        for bad in ["r.io/a___b", "r.io/a..b", "r.io/.a", "r.io/a_"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn it_round_trips_through_serde_as_its_canonical_string() {
        let r = parse("localhost:5000/app");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"localhost:5000/app:latest\"");
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), r);
    }
}
