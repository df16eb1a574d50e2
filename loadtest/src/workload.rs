//! What to ask: operation mixes (the YCSB core workloads), which keys (uniform, zipfian,
//! latest) and how large the values are.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

/// One client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read,
    Update,
    Insert,
    Delete,
    /// Read, then write back with the read's context (YCSB F).
    Rmw,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Delete => "delete",
            Op::Rmw => "rmw",
        }
    }
}

/// Weights of each operation (they need not sum to 100).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix(pub Vec<(Op, f64)>);

impl Mix {
    /// YCSB core workloads A, B, C, D, F.
    pub fn ycsb(name: &str) -> Option<(Mix, Distribution)> {
        Some(match name.to_ascii_lowercase().as_str() {
            "a" => (Mix(vec![(Op::Read, 50.0), (Op::Update, 50.0)]), Distribution::Zipfian),
            "b" => (Mix(vec![(Op::Read, 95.0), (Op::Update, 5.0)]), Distribution::Zipfian),
            "c" => (Mix(vec![(Op::Read, 100.0)]), Distribution::Zipfian),
            "d" => (Mix(vec![(Op::Read, 95.0), (Op::Insert, 5.0)]), Distribution::Latest),
            "f" => (Mix(vec![(Op::Read, 50.0), (Op::Rmw, 50.0)]), Distribution::Zipfian),
            _ => return None,
        })
    }

    /// `read=50,update=30,delete=20` (also `insert`, `rmw`).
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut ops = Vec::new();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or(format!("expected op=weight, got {part:?}"))?;
            let op = match name.trim() {
                "read" => Op::Read,
                "update" => Op::Update,
                "insert" => Op::Insert,
                "delete" => Op::Delete,
                "rmw" => Op::Rmw,
                other => return Err(format!("unknown operation {other:?}")),
            };
            let w: f64 = weight.trim().parse().map_err(|_| format!("bad weight {weight:?}"))?;
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("bad weight {weight:?}"));
            }
            ops.push((op, w));
        }
        if ops.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
            return Err("the mix has no operations".into());
        }
        Ok(Mix(ops))
    }

    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.random::<f64>() * total;
        for &(op, w) in &self.0 {
            if x < w {
                return op;
            }
            x -= w;
        }
        self.0.last().expect("non-empty mix").0
    }

    pub fn has(&self, op: Op) -> bool {
        self.0.iter().any(|&(o, w)| o == op && w > 0.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    /// YCSB's scrambled zipfian, theta 0.99: a few keys are hot, spread over the key space.
    Zipfian,
    /// Recently inserted keys are the most popular (YCSB D).
    Latest,
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!("unknown distribution {other:?} (uniform, zipfian, latest)")),
        }
    }
}

/// Zipfian over `0..n` with exponent `theta` (Gray et al., "Quickly generating
/// billion-record synthetic databases", as in YCSB's ZipfianGenerator).
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub const THETA: f64 = 0.99;

    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A rank: 0 is the most popular.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// FNV-1a, as YCSB scrambles zipfian ranks and names keys.
pub fn fnv64(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Chooses keys among the records loaded and inserted so far.
pub struct KeyChooser {
    dist: Distribution,
    zipf: Zipfian,
    /// Records that exist: the loaded ones plus those inserted since.
    count: AtomicU64,
}

impl KeyChooser {
    pub fn new(dist: Distribution, records: u64) -> KeyChooser {
        KeyChooser {
            dist,
            zipf: Zipfian::new(records, Zipfian::THETA),
            count: AtomicU64::new(records.max(1)),
        }
    }

    /// Index of an existing record.
    pub fn existing<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let n = self.count.load(Ordering::Relaxed);
        match self.dist {
            Distribution::Uniform => rng.random_range(0..n),
            Distribution::Zipfian => fnv64(self.zipf.next(rng)) % n,
            Distribution::Latest => n - 1 - self.zipf.next(rng).min(n - 1),
        }
    }

    /// Index for a new record (YCSB insert).
    pub fn insert(&self) -> u64 {
        self.count.fetch_add(1, Ordering::Relaxed)
    }
}

/// The key of record `i`.
pub fn key(i: u64) -> String {
    format!("user{i:010}")
}

/// Value sizes: fixed, or uniform in a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for ValueSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("bad size {x:?}"));
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if min > max {
            return Err(format!("empty range {s:?}"));
        }
        Ok(ValueSize { min, max })
    }
}

impl ValueSize {
    pub fn value<R: Rng + ?Sized>(&self, rng: &mut R) -> bytes::Bytes {
        let len = rng.random_range(self.min..=self.max);
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        // Printable, so values can be eyeballed in curl.
        for b in &mut v {
            *b = b'a' + (*b % 26);
        }
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ycsb_mixes() {
        let (a, d) = Mix::ycsb("A").unwrap();
        assert_eq!(d, Distribution::Zipfian);
        assert!(a.has(Op::Read) && a.has(Op::Update) && !a.has(Op::Insert));
        assert_eq!(Mix::ycsb("d").unwrap().1, Distribution::Latest);
        assert!(Mix::ycsb("e").is_none());
        let mut rng = StdRng::seed_from_u64(1);
        let reads = (0..10_000)
            .filter(|_| Mix::ycsb("b").unwrap().0.pick(&mut rng) == Op::Read)
            .count();
        assert!((9300..9700).contains(&reads), "{reads}");
    }

    #[test]
    fn custom_mix_parses_and_rejects() {
        let m = Mix::parse("read=50,update=30,delete=20").unwrap();
        assert_eq!(m.0.len(), 3);
        assert!(Mix::parse("read=x").is_err());
        assert!(Mix::parse("scan=1").is_err());
        assert!(Mix::parse("read=0").is_err());
        assert!(Mix::parse("read=-1").is_err());
    }

    #[test]
    fn zipfian_is_skewed_towards_low_ranks() {
        let z = Zipfian::new(10_000, Zipfian::THETA);
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<u64> = (0..100_000).map(|_| z.next(&mut rng)).collect();
        assert!(draws.iter().all(|&r| r < 10_000));
        let top = draws.iter().filter(|&&r| r == 0).count() as f64 / draws.len() as f64;
        // With theta 0.99 over 10,000 items the hottest key takes about 1/zeta(n) ≈ 10%.
        assert!((0.07..0.14).contains(&top), "rank 0 share {top}");
        let top100 = draws.iter().filter(|&&r| r < 100).count() as f64 / draws.len() as f64;
        assert!(top100 > 0.45, "top 100 share {top100}");
    }

    #[test]
    fn latest_prefers_recent_inserts() {
        let k = KeyChooser::new(Distribution::Latest, 1000);
        for _ in 0..10 {
            k.insert();
        }
        let mut rng = StdRng::seed_from_u64(3);
        let picks: Vec<u64> = (0..10_000).map(|_| k.existing(&mut rng)).collect();
        assert!(picks.iter().all(|&i| i < 1010));
        let newest = picks.iter().filter(|&&i| i == 1009).count();
        assert!(newest > 500, "{newest}");
    }

    #[test]
    fn value_sizes() {
        let mut rng = StdRng::seed_from_u64(3);
        let fixed: ValueSize = "100".parse().unwrap();
        assert_eq!(fixed.value(&mut rng).len(), 100);
        let range: ValueSize = "10..20".parse().unwrap();
        for _ in 0..100 {
            assert!((10..=20).contains(&range.value(&mut rng).len()));
        }
        assert!("20..10".parse::<ValueSize>().is_err());
    }
}
