//! Logging through the host, which attributes every line to the backend: [`log_at`], and the
//! macros [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn) and [`error!`](crate::error), which take the message and then
//! `key = value` fields (any `Display` value):
//!
//! ```no_run
//! # let (name, id) = ("pvc-1", "vol-1");
//! modcsi_backend_sdk::debug!("volume named", name = name, volume = id);
//! ```

#![warn(missing_docs)]

use crate::log;
use crate::types::LogLevel;

/// Logs a message with its fields through the host.
pub fn log_at(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log::log(level, message, &fields);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $message:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log_at(
            $crate::types::LogLevel::$level,
            ::std::convert::AsRef::<str>::as_ref(&$message),
            &[$((
                ::std::stringify!($key),
                ::std::string::ToString::to_string(&$value).as_str(),
            )),*],
        )
    };
}

/// Logs at trace level: `trace!("message", key = value, …)`.
#[macro_export]
macro_rules! trace {
    ($($args:tt)+) => { $crate::__log!(Trace, $($args)+) };
}

/// Logs at debug level: `debug!("message", key = value, …)`.
#[macro_export]
macro_rules! debug {
    ($($args:tt)+) => { $crate::__log!(Debug, $($args)+) };
}

/// Logs at info level: `info!("message", key = value, …)`.
#[macro_export]
macro_rules! info {
    ($($args:tt)+) => { $crate::__log!(Info, $($args)+) };
}

/// Logs at warn level: `warn!("message", key = value, …)`.
#[macro_export]
macro_rules! warn {
    ($($args:tt)+) => { $crate::__log!(Warn, $($args)+) };
}

/// Logs at error level: `error!("message", key = value, …)` (a log line; the call's error is
/// [`err!`](crate::err)).
#[macro_export]
macro_rules! error {
    ($($args:tt)+) => { $crate::__log!(Error, $($args)+) };
}
