//! What the bench asks for: the operation mix, the choice of keys, the values, and a small
//! seeded random generator (the bench needs speed and repeatability, not cryptography).

use std::fmt;

/// One operation of the mix.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// Write a value.
    Put,
    /// Linearizable read.
    Get,
    /// Compare-and-swap against the revision this bench client last saw for the key.
    Cas,
}

impl OpKind {
    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Cas => "cas",
        }
    }
}

/// Weights of each operation; any non-negative integers with a positive sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of puts.
    pub put: u32,
    /// Weight of linearizable gets.
    pub get: u32,
    /// Weight of compare-and-swaps.
    pub cas: u32,
}

impl Mix {
    /// Parses `put=50,get=50` (names may be omitted: they weigh 0).
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut mix = Mix {
            put: 0,
            get: 0,
            cas: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("expected name=weight, got '{part}'"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of '{name}' is not a whole number: '{weight}'"))?;
            match name.trim() {
                "put" => mix.put = weight,
                "get" => mix.get = weight,
                "cas" => mix.cas = weight,
                other => return Err(format!("unknown operation '{other}' (put, get, cas)")),
            }
        }
        if u64::from(mix.put) + u64::from(mix.get) + u64::from(mix.cas) == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(mix)
    }

    /// Picks an operation with probability proportional to its weight.
    pub fn choose(&self, rng: &mut Rng) -> OpKind {
        let total = u64::from(self.put) + u64::from(self.get) + u64::from(self.cas);
        let pick = rng.below(total);
        if pick < u64::from(self.put) {
            OpKind::Put
        } else if pick < u64::from(self.put) + u64::from(self.get) {
            OpKind::Get
        } else {
            OpKind::Cas
        }
    }

    /// Whether any operation reads or compares existing keys (so prefilling them matters).
    pub fn reads_existing(&self) -> bool {
        self.get > 0 || self.cas > 0
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put={},get={},cas={}", self.put, self.get, self.cas)
    }
}

/// The name of key number `index`.
pub fn key_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:08}")
}

/// A value of `size` printable bytes (safe for the line protocol and for shells).
pub fn make_value(size: usize) -> bytes::Bytes {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    bytes::Bytes::from(
        (0..size)
            .map(|i| alphabet[i % alphabet.len()])
            .collect::<Vec<u8>>(),
    )
}

/// xorshift64*: fast, seeded, good enough to spread keys and operations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0; a tiny modulo bias is fine here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes() {
        assert_eq!(
            Mix::parse("put=50,get=50"),
            Ok(Mix {
                put: 50,
                get: 50,
                cas: 0
            })
        );
        assert!(Mix::parse("put=0").is_err());
        assert!(Mix::parse("pet=1").is_err());
        assert!(Mix::parse("put").is_err());
        let mix = Mix::parse("put=1,cas=3").expect("valid");
        let mut rng = Rng::new(7);
        let cas = (0..4000)
            .filter(|_| mix.choose(&mut rng) == OpKind::Cas)
            .count();
        assert!((2700..3300).contains(&cas), "{cas}");
        assert!(!Mix::parse("put=1").expect("valid").reads_existing());
    }

    #[test]
    fn values_are_printable() {
        let v = make_value(100);
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(key_name("b/", 7), "b/00000007");
    }
}
