//! A backend's configuration (`modcsi serve --backend-config FILE`): a TOML document whose
//! tables flatten into dotted keys (`targets.router1.address`). A value written as
//! `{ secret-file = "/path" }` is a secret reference: the host reads the file at start, hands
//! the value to the backend on request, and scrubs it from everything the backend writes.
//!
//! The `ssh` and `http` tables are the host's own: they configure the `ssh` and `http`
//! capabilities (targets, keys, credentials), and the backend cannot read them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("backend configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backend configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("backend configuration {path}: {key}: cannot read secret file {file}: {source}")]
    SecretFile {
        path: PathBuf,
        key: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("backend configuration {path}: {key}: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Default, Clone)]
pub struct BackendConfig {
    values: BTreeMap<String, String>,
    secrets: Vec<String>,
    ssh: std::sync::Arc<super::ssh::SshClient>,
    http: std::sync::Arc<super::http::HttpTargets>,
}

impl BackendConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
        let mut config = Self::default();
        config.flatten(path, "", &toml::Value::Table(table))?;
        let ssh = config.host_section("ssh");
        config.ssh =
            std::sync::Arc::new(super::ssh::SshClient::from_config(&ssh).map_err(|message| {
                ConfigError::Value {
                    path: path.to_owned(),
                    key: "ssh".into(),
                    message,
                }
            })?);
        let http = config.host_section("http");
        config.http = std::sync::Arc::new(super::http::HttpTargets::from_config(&http).map_err(
            |message| ConfigError::Value {
                path: path.to_owned(),
                key: "http".into(),
                message,
            },
        )?);
        Ok(config)
    }

    /// Takes the host-owned section `name` out of what the backend can read, its keys relative
    /// to it.
    fn host_section(&mut self, name: &str) -> BTreeMap<String, String> {
        let prefix = format!("{name}.");
        let (section, rest) = std::mem::take(&mut self.values)
            .into_iter()
            .partition::<BTreeMap<_, _>, _>(|(k, _)| k.starts_with(&prefix));
        self.values = rest;
        section
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
            .collect()
    }

    fn flatten(&mut self, path: &Path, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let join = |k: &str| {
            if key.is_empty() {
                k.to_owned()
            } else {
                format!("{key}.{k}")
            }
        };
        match value {
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("secret-file") => {
                let Some(file) = t["secret-file"].as_str() else {
                    return Err(ConfigError::Value {
                        path: path.to_owned(),
                        key: key.to_owned(),
                        message: "secret-file must be a path".into(),
                    });
                };
                let file = Path::new(file);
                let secret =
                    std::fs::read_to_string(file).map_err(|source| ConfigError::SecretFile {
                        path: path.to_owned(),
                        key: key.to_owned(),
                        file: file.to_owned(),
                        source,
                    })?;
                let secret = secret.trim_end_matches(['\n', '\r']).to_owned();
                self.secrets.push(secret.clone());
                self.values.insert(key.to_owned(), secret);
            }
            toml::Value::Table(t) if t.len() == 1 && t.contains_key("secret") => {
                return Err(ConfigError::Value {
                    path: path.to_owned(),
                    key: key.to_owned(),
                    message: "Kubernetes secret references need the Kubernetes client, which this \
                              host does not have yet; use secret-file"
                        .into(),
                });
            }
            toml::Value::Table(t) => {
                for (k, v) in t {
                    self.flatten(path, &join(k), v)?;
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.flatten(path, &join(&i.to_string()), v)?;
                }
            }
            toml::Value::String(s) => {
                self.values.insert(key.to_owned(), s.clone());
            }
            other => {
                self.values.insert(key.to_owned(), other.to_string());
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The `ssh` capability's targets and connections.
    pub fn ssh(&self) -> &super::ssh::SshClient {
        &self.ssh
    }

    /// The `http` capability's targets and connections.
    pub fn http(&self) -> &super::http::HttpTargets {
        &self.http
    }

    /// The resolved secret values, for scrubbing.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_and_resolves_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cr3t-value\n").unwrap();
        let path = dir.path().join("backend.toml");
        std::fs::write(
            &path,
            format!(
                "endpoint = \"https://api.example\"\nretries = 3\n[targets.r1]\naddress = \"10.0.0.1\"\nport = 22\npassword = {{ secret-file = \"{}\" }}\nportals = [\"a\", \"b\"]\n",
                dir.path().join("key").display()
            ),
        )
        .unwrap();
        let config = BackendConfig::load(&path).unwrap();
        assert_eq!(config.get("endpoint"), Some("https://api.example"));
        assert_eq!(config.get("retries"), Some("3"));
        assert_eq!(config.get("targets.r1.port"), Some("22"));
        assert_eq!(config.get("targets.r1.portals.1"), Some("b"));
        assert_eq!(config.get("targets.r1.password"), Some("s3cr3t-value"));
        assert_eq!(config.secrets(), ["s3cr3t-value"]);
    }

    #[test]
    fn a_missing_secret_file_names_the_key_not_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backend.toml");
        std::fs::write(
            &path,
            "[auth]\ntoken = { secret-file = \"/nonexistent/token\" }\n",
        )
        .unwrap();
        let err = BackendConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("auth.token") && err.contains("/nonexistent/token"),
            "{err}"
        );
    }
}
