//! Kubernetes quantities as bytes: `1073741824`, `512Mi`, `10Gi`, `1G`, `1.5Gi`.

/// The bytes `quantity` stands for (a fraction rounds up); `None` for what is not a size.
pub fn bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let factor: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let total = whole.checked_mul(factor)? + (fraction * factor).div_ceil(scale);
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_in_every_unit_and_nothing_else() {
        assert_eq!(bytes("42"), Some(42));
        assert_eq!(bytes("16Mi"), Some(16 << 20));
        assert_eq!(bytes("10Gi"), Some(10 << 30));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1k"), Some(1_000));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("0.1"), Some(1), "a fraction of a byte rounds up");
        for bad in ["", ".", "1Xi", "Gi", "1.2.3", "-1", "99999999999Ei", "1e3"] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
    }
}
