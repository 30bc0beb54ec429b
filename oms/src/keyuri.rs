//! Key names: where a private signing key lives, written as one string in a flag or a config field.
//!
//! - `PATH` or `file:PATH`: a PEM file (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
//! - `file:PATH?passphrase-env=VAR` or `file:PATH?passphrase-file=FILE`: an encrypted PKCS#8 PEM
//!   (`ENCRYPTED PRIVATE KEY`, PBES2 as `openssl genpkey -aes-256-cbc` writes it); the passphrase is read from the
//!   environment variable or from the file (one trailing newline dropped).
//! - `pkcs11:token=LABEL;object=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-env=VAR`: an EC key pair in
//!   a PKCS#11 token (RFC 7512 syntax). `module-path` defaults to `$SOVRA_PKCS11_MODULE`, else
//!   `/usr/lib/softhsm/libsofthsm2.so`; the PIN is read from `pin-env` (default `SOVRA_PKCS11_PIN`) or from
//!   `pin-source=file:FILE`. `pin-value` is refused: a PIN written in the name would reach logs and errors.
//!
//! A name never holds a secret, so it may be printed; [`KeyUri`]'s `Display` writes it back.

use crate::keys::KeyError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret (a passphrase or a PIN) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file; one trailing newline (`\n` or `\r\n`) is dropped.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret. `what` names it in errors ("passphrase", "PIN"); the secret itself is never in an error.
    pub fn read(&self, what: &str) -> Result<String, KeyError> {
        let mut value = match self {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                KeyError::Secret(format!("the environment variable {var} (the {what}) is not set or not UTF-8"))
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                KeyError::Secret(format!("cannot read the {what} from {}: {}", path.display(), e.kind()))
            })?,
        };
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        Ok(value)
    }
}

/// A key in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The token's label (`token=`).
    pub token: String,
    /// The label of the private key object, and of its public key object (`object=`).
    pub object: String,
    /// The PKCS#11 module (`module-path=`); `None` = `$SOVRA_PKCS11_MODULE` or SoftHSM's default path.
    pub module: Option<PathBuf>,
    /// Where the user PIN is read (`pin-env=` / `pin-source=`); `None` = `$SOVRA_PKCS11_PIN`.
    pub pin: Option<SecretSource>,
}

impl Pkcs11Uri {
    /// The module to load.
    pub fn module_path(&self) -> PathBuf {
        self.module.clone().unwrap_or_else(|| {
            std::env::var_os("SOVRA_PKCS11_MODULE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        })
    }

    /// Where the PIN comes from.
    pub fn pin_source(&self) -> SecretSource {
        self.pin.clone().unwrap_or_else(|| SecretSource::Env("SOVRA_PKCS11_PIN".into()))
    }
}

/// A parsed key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUri {
    /// A PEM file, encrypted when a passphrase source is given.
    File {
        /// The file.
        path: PathBuf,
        /// The passphrase of an encrypted PKCS#8 key.
        passphrase: Option<SecretSource>,
    },
    /// A key pair in a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

/// RFC 3986 percent-decoding of one attribute value.
fn decode(value: &str, attr: &str) -> Result<String, KeyError> {
    let bad = || KeyError::Uri(format!("`{attr}`: bad percent-encoding in `{value}`"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn pairs<'a>(text: &'a str, sep: char) -> impl Iterator<Item = Result<(&'a str, &'a str), KeyError>> + 'a {
    text.split(sep)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').ok_or_else(|| KeyError::Uri(format!("`{p}` is not an `attribute=value` pair"))))
}

fn parse_file(rest: &str) -> Result<KeyUri, KeyError> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(KeyError::Uri("`file:` names no file; write `file:PATH`".into()));
    }
    let mut passphrase = None;
    for pair in query.into_iter().flat_map(|q| pairs(q, '&')) {
        let (attr, value) = pair?;
        let value = decode(value, attr)?;
        let source = match attr {
            "passphrase-env" => SecretSource::Env(value),
            "passphrase-file" => SecretSource::File(value.into()),
            other => {
                return Err(KeyError::Uri(format!(
                    "unknown attribute `{other}` of a `file:` key; use `passphrase-env=VAR` or `passphrase-file=FILE`"
                )));
            }
        };
        if passphrase.replace(source).is_some() {
            return Err(KeyError::Uri("give one of `passphrase-env` and `passphrase-file`, once".into()));
        }
    }
    Ok(KeyUri::File { path: PathBuf::from(decode(path, "file")?), passphrase })
}

fn parse_pkcs11(rest: &str) -> Result<KeyUri, KeyError> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (mut token, mut object, mut module, mut pin) = (None, None, None, None);
    for pair in pairs(path, ';') {
        let (attr, value) = pair?;
        let value = decode(value, attr)?;
        match attr {
            "token" => token = Some(value),
            "object" => object = Some(value),
            "type" if value == "private" => {}
            "type" => return Err(KeyError::Uri(format!("`type={value}`: a signing key is `type=private`"))),
            other => {
                return Err(KeyError::Uri(format!(
                    "unsupported PKCS#11 URI attribute `{other}`; name the key by `token=` and `object=`"
                )));
            }
        }
    }
    for pair in query.into_iter().flat_map(|q| pairs(q, '&')) {
        let (attr, value) = pair?;
        let value = decode(value, attr)?;
        let replaced = match attr {
            "module-path" => module.replace(PathBuf::from(value)).is_some(),
            "pin-env" => pin.replace(SecretSource::Env(value)).is_some(),
            "pin-source" => {
                let file = value.strip_prefix("file:").unwrap_or(&value);
                pin.replace(SecretSource::File(file.into())).is_some()
            }
            "pin-value" => {
                return Err(KeyError::Uri(
                    "`pin-value` is refused (the PIN would be written wherever the key name is); use `pin-env=VAR` \
                     or `pin-source=file:FILE`"
                        .into(),
                ));
            }
            other => {
                return Err(KeyError::Uri(format!(
                    "unsupported PKCS#11 URI query attribute `{other}`; use `module-path`, `pin-env` or `pin-source`"
                )));
            }
        };
        if replaced {
            return Err(KeyError::Uri(format!("`{attr}` (or another PIN source) is given twice")));
        }
    }
    let need = |v: Option<String>, attr: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| KeyError::Uri(format!("a `pkcs11:` key needs `{attr}=LABEL`")))
    };
    Ok(KeyUri::Pkcs11(Pkcs11Uri { token: need(token, "token")?, object: need(object, "object")?, module, pin }))
}

impl KeyUri {
    /// Parses a key name: `pkcs11:…`, `file:…`, or else a plain path (taken as given, `?` included).
    pub fn parse(name: &str) -> Result<KeyUri, KeyError> {
        if let Some(rest) = name.strip_prefix("pkcs11:") {
            parse_pkcs11(rest)
        } else if let Some(rest) = name.strip_prefix("file:") {
            parse_file(rest)
        } else if name.is_empty() {
            Err(KeyError::Uri("empty key name; give a path, `file:PATH` or `pkcs11:token=…;object=…`".into()))
        } else {
            Ok(KeyUri::File { path: PathBuf::from(name), passphrase: None })
        }
    }

    /// The same name with its relative file paths (key, passphrase file, PIN file, module) joined to `base`, as a
    /// config file's paths are read relative to the config.
    pub fn relative_to(&self, base: &Path) -> KeyUri {
        let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let secret = |s: &Option<SecretSource>| match s {
            Some(SecretSource::File(p)) => Some(SecretSource::File(at(p))),
            other => other.clone(),
        };
        match self {
            KeyUri::File { path, passphrase } => KeyUri::File { path: at(path), passphrase: secret(passphrase) },
            KeyUri::Pkcs11(u) => KeyUri::Pkcs11(Pkcs11Uri {
                token: u.token.clone(),
                object: u.object.clone(),
                module: u.module.as_deref().map(at),
                pin: secret(&u.pin),
            }),
        }
    }
}

/// A config field's key name joined to the config's directory: the name as a path, ready for
/// [`crate::SigningKey::open`]. A name that does not parse is returned as given (opening it reports why).
pub fn resolve_name(base: &Path, name: &Path) -> PathBuf {
    match name.to_str().map(KeyUri::parse) {
        Some(Ok(uri)) => {
            let plain = !name.to_string_lossy().starts_with("file:");
            match uri.relative_to(base) {
                KeyUri::File { path, passphrase: None } if plain => path,
                other => PathBuf::from(other.to_string()),
            }
        }
        _ if name.is_absolute() => name.to_path_buf(),
        _ => base.join(name),
    }
}

/// Percent-encodes the characters that would end an attribute value.
fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ';' | '?' | '&' | '%' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &SecretSource, env: &str, file: &str| match s {
            SecretSource::Env(v) => format!("{env}={}", enc(v)),
            SecretSource::File(p) => format!("{file}={}", enc(&p.to_string_lossy())),
        };
        match self {
            KeyUri::File { path, passphrase } => {
                write!(f, "file:{}", enc(&path.to_string_lossy()))?;
                if let Some(s) = passphrase {
                    write!(f, "?{}", secret(s, "passphrase-env", "passphrase-file"))?;
                }
                Ok(())
            }
            KeyUri::Pkcs11(u) => {
                write!(f, "pkcs11:token={};object={}", enc(&u.token), enc(&u.object))?;
                let mut query = Vec::new();
                if let Some(m) = &u.module {
                    query.push(format!("module-path={}", enc(&m.to_string_lossy())));
                }
                match &u.pin {
                    Some(SecretSource::File(p)) => query.push(format!("pin-source=file:{}", enc(&p.to_string_lossy()))),
                    Some(s) => query.push(secret(s, "pin-env", "pin-source")),
                    None => {}
                }
                if !query.is_empty() {
                    write!(f, "?{}", query.join("&"))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in [
            "file:/k/key.pem",
            "file:/k/key.pem?passphrase-env=KEY_PASS",
            "file:/k/key.pem?passphrase-file=/run/pass",
            "pkcs11:token=sovra;object=approver",
            "pkcs11:token=my%3Btoken;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-env=PIN",
            "pkcs11:token=t;object=o?pin-source=file:/run/pin",
        ] {
            assert_eq!(KeyUri::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(
            KeyUri::parse("keys/a?b.pem").unwrap(),
            KeyUri::File { path: "keys/a?b.pem".into(), passphrase: None }
        );
        let KeyUri::Pkcs11(u) = KeyUri::parse("pkcs11:token=my%3Btoken;object=a").unwrap() else { panic!() };
        assert_eq!(u.token, "my;token");
    }

    #[test]
    fn bad_names_say_what_to_write() {
        let e = |n: &str| KeyUri::parse(n).unwrap_err().to_string();
        assert!(e("pkcs11:token=t").contains("needs `object=LABEL`"), "{}", e("pkcs11:token=t"));
        assert!(e("pkcs11:token=t;object=o?pin-value=1234").contains("pin-value` is refused"));
        assert!(!e("pkcs11:token=t;object=o?pin-value=1234").contains("1234"));
        assert!(e("pkcs11:token=t;object=o;serial=1").contains("unsupported PKCS#11 URI attribute `serial`"));
        assert!(e("file:k.pem?password=x").contains("unknown attribute `password`"));
        assert!(e("file:").contains("names no file"));
        assert!(e("").contains("empty key name"));
    }

    #[test]
    fn relative_names_join_the_config_directory() {
        let base = Path::new("/etc/sovra");
        assert_eq!(resolve_name(base, Path::new("keys/s.pem")), PathBuf::from("/etc/sovra/keys/s.pem"));
        assert_eq!(
            resolve_name(base, Path::new("file:s.pem?passphrase-file=pass")),
            PathBuf::from("file:/etc/sovra/s.pem?passphrase-file=/etc/sovra/pass")
        );
        assert_eq!(resolve_name(base, Path::new("pkcs11:token=t;object=o")), PathBuf::from("pkcs11:token=t;object=o"));
    }
}
