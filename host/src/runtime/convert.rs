//! Conversion between a contract version's generated types and the host's own
//! (`volume::types`), field by field. A version adapter declares each record and variant once
//! with [`records!`] and [`variants!`]; lists, options, results and plain values convert
//! through the blanket impls here.

/// Converts a value of one type family into its counterpart in the other.
pub(crate) trait Convert<T> {
    fn convert(self) -> T;
}

macro_rules! same {
    ($($t:ty),*) => {
        $(impl Convert<$t> for $t {
            fn convert(self) -> $t {
                self
            }
        })*
    };
}

same!(String, bool, u16, u32, u64, i32, i64, (), (String, String));

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<A: Convert<B>, B, E: Convert<F>, F> Convert<Result<B, F>> for Result<A, E> {
    fn convert(self) -> Result<B, F> {
        self.map(Convert::convert).map_err(Convert::convert)
    }
}

/// Both directions for records whose fields have the same names on both sides:
/// `records!(wit, host: Volume { id, capacity_bytes }, …)`, where `wit` and `host` are the two
/// modules; `WitName => HostName { … }` when the names differ.
macro_rules! records {
    ($wit:ident, $host:ident: $($a:ident $(=> $b:ident)? { $($field:ident),* $(,)? }),* $(,)?) => {
        $($crate::runtime::convert::records!(@name [$a $(=> $b)?] $wit $host { $($field),* });)*
    };
    (@name [$a:ident] $wit:ident $host:ident $body:tt) => {
        $crate::runtime::convert::records!(@one $wit $host $a $a $body);
    };
    (@name [$a:ident => $b:ident] $wit:ident $host:ident $body:tt) => {
        $crate::runtime::convert::records!(@one $wit $host $a $b $body);
    };
    (@one $wit:ident $host:ident $a:ident $b:ident { $($field:ident),* }) => {
        impl $crate::runtime::convert::Convert<$host::$b> for $wit::$a {
            fn convert(self) -> $host::$b {
                $host::$b { $($field: $crate::runtime::convert::Convert::convert(self.$field)),* }
            }
        }
        impl $crate::runtime::convert::Convert<$wit::$a> for $host::$b {
            fn convert(self) -> $wit::$a {
                $wit::$a { $($field: $crate::runtime::convert::Convert::convert(self.$field)),* }
            }
        }
    };
}

/// Both directions for enums and variants with the same cases on both sides, each case without
/// a payload or with one: `variants!(wit, host: Attachment { NvmeTcp(t), LocalDir }, …)`.
macro_rules! variants {
    ($wit:ident, $host:ident: $($a:ident $(=> $b:ident)? { $($case:ident $(($x:ident))?),* $(,)? }),* $(,)?) => {
        $($crate::runtime::convert::variants!(@name [$a $(=> $b)?] $wit $host { $($case $(($x))?),* });)*
    };
    (@name [$a:ident] $wit:ident $host:ident $body:tt) => {
        $crate::runtime::convert::variants!(@one $wit $host $a $a $body);
    };
    (@name [$a:ident => $b:ident] $wit:ident $host:ident $body:tt) => {
        $crate::runtime::convert::variants!(@one $wit $host $a $b $body);
    };
    (@one $wit:ident $host:ident $a:ident $b:ident { $($case:ident $(($x:ident))?),* }) => {
        impl $crate::runtime::convert::Convert<$host::$b> for $wit::$a {
            fn convert(self) -> $host::$b {
                match self {
                    $($wit::$a::$case $(($x))? => $host::$b::$case $(($crate::runtime::convert::Convert::convert($x)))?),*
                }
            }
        }
        impl $crate::runtime::convert::Convert<$wit::$a> for $host::$b {
            fn convert(self) -> $wit::$a {
                match self {
                    $($host::$b::$case $(($x))? => $wit::$a::$case $(($crate::runtime::convert::Convert::convert($x)))?),*
                }
            }
        }
    };
}

pub(crate) use {records, variants};
