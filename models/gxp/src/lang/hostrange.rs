//! Host-name ranges in host lists: `node[000-127]`, `n[1-3,7]`, `r[1-2]n[01-02]`.
//!
//! A range keeps the width of its lower bound when that bound has a leading zero (`[000-127]` gives
//! `000`…`127`), as pdsh/clush do. Expansion is capped so a typo cannot allocate gigabytes.

/// Most names one pattern may expand to.
pub const MAX_EXPANSION: usize = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("unbalanced '[' or ']' in host pattern {0:?}")]
    Unbalanced(String),
    #[error("bad range {0:?} in host pattern (expected e.g. 000-127 or 1,3,5-7)")]
    BadRange(String),
    #[error("host pattern {0:?} expands to more than {MAX_EXPANSION} names")]
    TooMany(String),
}

/// Expands one pattern into host names, in order.
pub fn expand(pattern: &str) -> Result<Vec<String>, RangeError> {
    let Some(open) = pattern.find('[') else {
        if pattern.contains(']') {
            return Err(RangeError::Unbalanced(pattern.to_string()));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|c| c + open)
        .ok_or_else(|| RangeError::Unbalanced(pattern.to_string()))?;
    let prefix = &pattern[..open];
    if prefix.contains(']') {
        return Err(RangeError::Unbalanced(pattern.to_string()));
    }
    let items = range_items(&pattern[open + 1..close])?;
    let rest = expand(&pattern[close + 1..])?;
    if items.len().saturating_mul(rest.len()) > MAX_EXPANSION {
        return Err(RangeError::TooMany(pattern.to_string()));
    }
    let mut out = Vec::with_capacity(items.len() * rest.len());
    for i in &items {
        for r in &rest {
            out.push(format!("{prefix}{i}{r}"));
        }
    }
    Ok(out)
}

/// Expands a whitespace-separated list of patterns.
pub fn expand_all(list: &str) -> Result<Vec<String>, RangeError> {
    let mut out = Vec::new();
    for p in list.split_whitespace() {
        out.extend(expand(p)?);
        if out.len() > MAX_EXPANSION {
            return Err(RangeError::TooMany(list.to_string()));
        }
    }
    Ok(out)
}

fn range_items(spec: &str) -> Result<Vec<String>, RangeError> {
    let bad = || RangeError::BadRange(spec.to_string());
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        if lo.is_empty()
            || hi.is_empty()
            || !lo.bytes().all(|b| b.is_ascii_digit())
            || !hi.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let a: u64 = lo.parse().map_err(|_| bad())?;
        let b: u64 = hi.parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        if (b - a) as usize >= MAX_EXPANSION || out.len() + (b - a) as usize >= MAX_EXPANSION {
            return Err(RangeError::TooMany(spec.to_string()));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        for v in a..=b {
            out.push(format!("{v:0width$}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_padded_ranges_lists_and_products() {
        let v = expand("node[000-127]").unwrap();
        assert_eq!(v.len(), 128);
        assert_eq!(v[0], "node000");
        assert_eq!(v[127], "node127");
        assert_eq!(expand("n[1-3,7]").unwrap(), vec!["n1", "n2", "n3", "n7"]);
        assert_eq!(
            expand("r[1-2]n[01-02].x").unwrap(),
            vec!["r1n01.x", "r1n02.x", "r2n01.x", "r2n02.x"]
        );
        assert_eq!(expand("plain").unwrap(), vec!["plain"]);
        assert_eq!(expand_all("a b[1-2]").unwrap(), vec!["a", "b1", "b2"]);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(matches!(expand("n[1-3"), Err(RangeError::Unbalanced(_))));
        assert!(matches!(expand("n1-3]"), Err(RangeError::Unbalanced(_))));
        assert!(matches!(expand("n[3-1]"), Err(RangeError::BadRange(_))));
        assert!(matches!(expand("n[a-b]"), Err(RangeError::BadRange(_))));
        assert!(matches!(
            expand("n[0-99999999]"),
            Err(RangeError::TooMany(_))
        ));
        assert!(matches!(
            expand("a[0-999]b[0-999]c[0-9]"),
            Err(RangeError::TooMany(_))
        ));
    }
}
