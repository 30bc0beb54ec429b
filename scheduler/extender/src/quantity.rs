//! Kubernetes resource quantities (`2`, `500m`, `1.5`, `64Gi`, `1e3`), converted exactly (integer arithmetic) and
//! rounded up, as kube-scheduler rounds requests.

/// A parsed, non-negative quantity: `mantissa × 2^bin × 10^dec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    mantissa: u128,
    bin: i32,
    dec: i32,
}

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {text:?}: {why}")]
pub struct QuantityError {
    /// The text as written.
    pub text: String,
    /// What is wrong.
    pub why: &'static str,
}

fn parse(text: &str) -> Result<Parsed, QuantityError> {
    let err = |why| QuantityError { text: text.to_string(), why };
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(err("negative quantities are not allowed"));
    }
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("expected a number such as 2, 0.5 or 500m"));
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(err("too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| err("not a number"))? };
    let mut dec = -(frac.len() as i32);
    let mut bin = 0;
    match suffix {
        "" => {}
        "n" => dec -= 9,
        "u" => dec -= 6,
        "m" => dec -= 3,
        "k" => dec += 3,
        "M" => dec += 6,
        "G" => dec += 9,
        "T" => dec += 12,
        "P" => dec += 15,
        "E" => dec += 18,
        "Ki" => bin += 10,
        "Mi" => bin += 20,
        "Gi" => bin += 30,
        "Ti" => bin += 40,
        "Pi" => bin += 50,
        "Ei" => bin += 60,
        s if s.starts_with('e') || s.starts_with('E') => {
            let e: i32 = s[1..].parse().map_err(|_| err("bad exponent"))?;
            if !(-40..=40).contains(&e) {
                return Err(err("exponent out of range"));
            }
            dec += e;
        }
        _ => return Err(err("unknown suffix; use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent")),
    }
    Ok(Parsed { mantissa, bin, dec })
}

/// `ceil(q × 2^bin_shift × 10^dec_shift)` as a u64.
fn scaled(text: &str, bin_shift: i32, dec_shift: i32) -> Result<u64, QuantityError> {
    let err = |why| QuantityError { text: text.to_string(), why };
    let p = parse(text)?;
    if p.mantissa == 0 {
        return Ok(0);
    }
    let (bin, dec) = (p.bin + bin_shift, p.dec + dec_shift);
    let too_large = || err("too large");
    let mut num = p.mantissa;
    let mut den: u128 = 1;
    if bin >= 0 {
        num = num.checked_mul(1u128.checked_shl(bin as u32).ok_or_else(too_large)?).ok_or_else(too_large)?;
    } else {
        den = 1u128.checked_shl((-bin) as u32).ok_or_else(too_large)?;
    }
    if dec >= 0 {
        num = num.checked_mul(10u128.checked_pow(dec as u32).ok_or_else(too_large)?).ok_or_else(too_large)?;
    } else {
        den = den.checked_mul(10u128.checked_pow((-dec) as u32).ok_or_else(too_large)?).ok_or_else(too_large)?;
    }
    let v = num.div_ceil(den);
    u64::try_from(v).map_err(|_| too_large())
}

/// A count (GPUs, `sovra.io/gpu-milli`), rounded up.
pub fn count(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 0, 0)
}

/// CPU in milli-cores, rounded up (`500m` → 500, `1.5` → 1500).
pub fn cpu_milli(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 0, 3)
}

/// Memory in MiB, rounded up (`1Gi` → 1024, `1G` → 954).
pub fn memory_mib(text: &str) -> Result<u64, QuantityError> {
    scaled(text, -20, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(count("2"), Ok(2));
        assert_eq!(count("0"), Ok(0));
        assert_eq!(count("1500m"), Ok(2));
        assert_eq!(count("1e3"), Ok(1000));
        assert_eq!(cpu_milli("500m"), Ok(500));
        assert_eq!(cpu_milli("1.5"), Ok(1500));
        assert_eq!(cpu_milli("0.0001"), Ok(1));
        assert_eq!(cpu_milli("2k"), Ok(2_000_000));
        assert_eq!(memory_mib("1Gi"), Ok(1024));
        assert_eq!(memory_mib("1G"), Ok(954));
        assert_eq!(memory_mib("512Mi"), Ok(512));
        assert_eq!(memory_mib("1"), Ok(1));
        assert_eq!(memory_mib("64Ki"), Ok(1));
        for bad in ["", "-1", "abc", "1.2.3", "1Xi", "1e999", "99999999999999999999999999999999", "1Ei9", "."] {
            assert!(count(bad).is_err(), "{bad}");
        }
        assert!(count("1E").is_ok());
        assert!(memory_mib("16Ei").is_ok());
        assert!(cpu_milli("100Ei").is_err(), "overflows u64 milli");
    }
}
