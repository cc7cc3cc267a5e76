//! Reading a call's key-value lists (StorageClass parameters, a volume context) by name and
//! type, each name optionally falling back to a key of the backend's configuration. A value that
//! does not read is `invalid-argument` naming where it came from and what it was.
//!
//! ```no_run
//! use modcsi_backend_sdk::params::{Params, config_or};
//! # fn f(parameters: &[(String, String)]) -> Result<(), modcsi_backend_sdk::types::Error> {
//! let p = Params::new(parameters).or_config(&[("port", "my.port")]);
//! let port: u16 = p.parse("port")?.unwrap_or(4420);
//! let kind = p.one_of("type", &["ssd", "hdd"])?.unwrap_or("ssd");
//! let target = config_or("my.target", "appliance");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::fmt::Display;
use std::str::FromStr;

use crate::types::{Error, ParameterSpec};
use crate::{config, err, lookup};

/// A key-value list read by name; see the [module](self).
#[derive(Debug, Clone)]
pub struct Params<'a> {
    given: &'a [(String, String)],
    /// `(name, configuration key, value)` of each name not given whose key is configured.
    configured: Vec<(String, String, String)>,
}

impl<'a> Params<'a> {
    /// Reads `pairs` (a call's parameters, a volume context).
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Self {
            given: pairs,
            configured: Vec::new(),
        }
    }

    /// Each `(name, key)`: a name the list lacks takes the value of the configuration's `key`
    /// (`--backend-config`), when that is set.
    pub fn or_config(mut self, keys: &[(&str, &str)]) -> Self {
        for (name, key) in keys {
            if lookup(self.given, name).is_none()
                && let Some(value) = config::get(key)
            {
                self.configured
                    .push((name.to_string(), key.to_string(), value));
            }
        }
        self
    }

    /// The value of `name`, and the configuration key it came from if it did.
    fn find(&self, name: &str) -> Option<(Option<&str>, &str)> {
        if let Some(value) = lookup(self.given, name) {
            return Some((None, value));
        }
        self.configured
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, key, value)| (Some(key.as_str()), value.as_str()))
    }

    /// Reads `name` with `read`, whose error says why the value does not read; the error names
    /// the parameter, or the configuration key the value came from.
    fn read<'s, T>(
        &'s self,
        name: &str,
        read: impl FnOnce(&'s str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        let Some((key, value)) = self.find(name) else {
            return Ok(None);
        };
        read(value).map(Some).map_err(|why| {
            let label = key.unwrap_or(name);
            err!(InvalidArgument, "{label} {value:?}: {why}")
        })
    }

    /// The value of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|(_, value)| value)
    }

    /// The value of `name`; `invalid-argument` when it has none.
    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| err!(InvalidArgument, "the parameter {name} is required"))
    }

    /// The value of `name` parsed as a `T` (a number, say), if it has one.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.read(name, |v| v.parse().map_err(|e: T::Err| e.to_string()))
    }

    /// The value of `name` as a boolean (`true` or `false`, in any case), if it has one.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Error> {
        self.read(name, |v| match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("not true or false".into()),
        })
    }

    /// The value of `name` as a size in bytes, if it has one: a whole number of bytes, or with
    /// a binary suffix (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`) or a decimal one (`k`, `M`, `G`, `T`, `P`),
    /// as Kubernetes writes quantities: `512Mi`, `10Gi`.
    pub fn size(&self, name: &str) -> Result<Option<u64>, Error> {
        self.read(name, |v| {
            size(v).ok_or_else(|| {
                "not a size (bytes, or a whole number with Ki, Mi, Gi, Ti, Pi, k, M, G, T or P)"
                    .into()
            })
        })
    }

    /// The value of `name`, which must be one of `allowed`, if it has one.
    pub fn one_of<'s>(&'s self, name: &str, allowed: &[&str]) -> Result<Option<&'s str>, Error> {
        self.read(name, |v| {
            if allowed.contains(&v) {
                Ok(v)
            } else {
                Err(format!("not one of {}", allowed.join(", ")))
            }
        })
    }
}

/// The configuration's value of `key`, or `default` when it is not set.
pub fn config_or(key: &str, default: &str) -> String {
    config::get(key).unwrap_or_else(|| default.to_owned())
}

/// What the `parameters` interface answers for a backend that lists its parameters in `info`
/// (`specs`) and reads them with `read`, the very function create-volume reads them with: every
/// name `specs` does not list, every required one missing, and what `read` refuses as
/// `invalid-argument`. Any other error of `read` means the backend cannot tell, and is returned.
///
/// ```no_run
/// # use modcsi_backend_sdk::types::{Error, KeyValues, ParameterSpec};
/// # fn specs() -> Vec<ParameterSpec> { vec![] }
/// # fn load(_: &[(String, String)]) -> Result<u16, Error> { Ok(4420) }
/// fn validate_parameters(parameters: KeyValues) -> Result<Vec<String>, Error> {
///     modcsi_backend_sdk::params::problems(&parameters, &specs(), |p| load(p).map(drop))
/// }
/// ```
pub fn problems(
    parameters: &[(String, String)],
    specs: &[ParameterSpec],
    read: impl FnOnce(&[(String, String)]) -> Result<(), Error>,
) -> Result<Vec<String>, Error> {
    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut found: Vec<String> = parameters
        .iter()
        .filter(|(name, _)| !known.contains(&name.as_str()))
        .map(|(name, _)| {
            format!(
                "the parameter {name} is not one this backend reads ({})",
                known.join(", ")
            )
        })
        .collect();
    for spec in specs.iter().filter(|s| s.required) {
        if lookup(parameters, &spec.name).is_none() {
            found.push(format!("the parameter {} is required", spec.name));
        }
    }
    match read(parameters) {
        Ok(()) => {}
        Err(Error::InvalidArgument(why)) => {
            if !found.contains(&why) {
                found.push(why);
            }
        }
        Err(other) => return Err(other),
    }
    Ok(found)
}

/// A size as [`Params::size`] reads it.
fn size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn message(e: Error) -> String {
        match e {
            Error::InvalidArgument(m) => m,
            other => panic!("not invalid-argument: {other:?}"),
        }
    }

    #[test]
    fn sizes_read_as_kubernetes_writes_them() {
        assert_eq!(size("1024"), Some(1024));
        assert_eq!(size("512Mi"), Some(512 << 20));
        assert_eq!(size("10Gi"), Some(10 << 30));
        assert_eq!(size("2Ti"), Some(2 << 40));
        assert_eq!(size("3k"), Some(3_000));
        assert_eq!(size("5G"), Some(5_000_000_000));
        for bad in [
            "",
            "Gi",
            "1.5Gi",
            "10 Gi",
            "10gi",
            "-1",
            "10GiB",
            "99999999Pi",
        ] {
            assert_eq!(size(bad), None, "{bad}");
        }
    }

    #[test]
    fn typed_values_and_their_errors() {
        let list = pairs(&[
            ("port", "4420"),
            ("big", "70000"),
            ("on", "True"),
            ("off", "false"),
            ("maybe", "perhaps"),
            ("size", "10Gi"),
            ("type", "hdd"),
        ]);
        let p = Params::new(&list);
        assert_eq!(p.get("port"), Some("4420"));
        assert_eq!(p.get("absent"), None);
        assert_eq!(p.parse::<u16>("port").unwrap(), Some(4420));
        assert_eq!(p.parse::<u16>("absent").unwrap(), None);
        let e = message(p.parse::<u16>("big").unwrap_err());
        assert!(e.starts_with("big \"70000\": "), "{e}");
        assert_eq!(p.bool("on").unwrap(), Some(true));
        assert_eq!(p.bool("off").unwrap(), Some(false));
        assert_eq!(
            message(p.bool("maybe").unwrap_err()),
            "maybe \"perhaps\": not true or false"
        );
        assert_eq!(p.size("size").unwrap(), Some(10 << 30));
        assert!(message(p.size("type").unwrap_err()).starts_with("type \"hdd\": not a size"));
        assert_eq!(p.one_of("type", &["ssd", "hdd"]).unwrap(), Some("hdd"));
        assert_eq!(
            message(p.one_of("type", &["ssd", "ssd-plus"]).unwrap_err()),
            "type \"hdd\": not one of ssd, ssd-plus"
        );
        assert_eq!(p.required("port").unwrap(), "4420");
        assert_eq!(
            message(p.required("absent").unwrap_err()),
            "the parameter absent is required"
        );
    }

    #[test]
    fn problems_are_unknown_names_missing_required_ones_and_what_reading_refuses() {
        let spec = |name: &str, required| ParameterSpec {
            name: name.into(),
            description: String::new(),
            required,
        };
        let specs = [spec("type", true), spec("port", false)];
        let read = |p: &[(String, String)]| {
            let p = Params::new(p);
            p.required("type")?;
            p.parse::<u16>("port").map(drop)
        };
        let fine = problems(&pairs(&[("type", "ssd")]), &specs, read).unwrap();
        assert!(fine.is_empty(), "{fine:?}");
        let found = problems(&pairs(&[("prot", "1"), ("port", "x")]), &specs, read).unwrap();
        assert_eq!(
            found,
            [
                "the parameter prot is not one this backend reads (type, port)",
                "the parameter type is required",
            ],
            "the missing one is said once, though reading refuses it too"
        );
        let found = problems(&pairs(&[("type", "a"), ("port", "x")]), &specs, read).unwrap();
        assert_eq!(found, ["port \"x\": invalid digit found in string"]);
        let cannot = problems(&[], &specs, |_| Err(err!(Unavailable, "no configuration")));
        assert!(matches!(cannot, Err(Error::Unavailable(_))));
    }

    #[test]
    fn configured_values_are_named_by_their_key() {
        let list = pairs(&[("port", "4420")]);
        let mut p = Params::new(&list);
        // What `or_config` records for a configured key (the configuration is the host's).
        p.configured
            .push(("delay".into(), "my.delay".into(), "soon".into()));
        assert_eq!(p.get("delay"), Some("soon"));
        assert_eq!(
            message(p.parse::<u32>("delay").unwrap_err()),
            "my.delay \"soon\": invalid digit found in string"
        );
    }
}
