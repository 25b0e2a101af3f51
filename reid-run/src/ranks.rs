//! Ranked lists: each evaluated query's nearest gallery images (`ranks.json` beside
//! `per_query.json`, one [`Ranks`] per evaluation label), and the queries two models disagree
//! on at rank 1 ([`flips`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file of a run folder holding [`Ranks`] by evaluation label.
pub const RANKS_FILE: &str = "ranks.json";

/// How many gallery images a query's list keeps unless told otherwise.
pub const DEFAULT_TOP_K: usize = 10;

/// One evaluation's ranked lists: the valid queries in the order of its [`crate::stats::PerQuery`],
/// each with the gallery images it ranks first (the protocol's junk and same-camera matches
/// left out, as the metrics leave them out). Only the gallery images some list shows are kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ranks {
    /// Images as paths relative to the dataset's root.
    pub images: Vec<String>,
    /// The identity of each image of `images`.
    pub image_pids: Vec<i64>,
    pub queries: Vec<RankedQuery>,
}

/// One query and its list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankedQuery {
    /// The query image, relative to the dataset's root.
    pub file: String,
    pub pid: i64,
    /// Indices into [`Ranks::images`], nearest first.
    pub top: Vec<u32>,
}

impl Ranks {
    /// Every index in range, one identity per image.
    pub fn validate(&self) -> Result<(), String> {
        if self.images.len() != self.image_pids.len() {
            return Err(format!(
                "{} images but {} image identities",
                self.images.len(),
                self.image_pids.len()
            ));
        }
        for (i, q) in self.queries.iter().enumerate() {
            if let Some(&j) = q.top.iter().find(|&&j| j as usize >= self.images.len()) {
                return Err(format!(
                    "query {i} ({}) lists image {j} of {}",
                    q.file,
                    self.images.len()
                ));
            }
        }
        Ok(())
    }

    /// Whether the `r`-th image of query `q`'s list shows its identity.
    pub fn is_match(&self, q: usize, r: usize) -> bool {
        let query = &self.queries[q];
        self.image_pids[query.top[r] as usize] == query.pid
    }

    /// Ranked lists from the gallery indices of each query's nearest images: `gallery(j)` is
    /// gallery image `j`'s (file, identity); `queries` the valid queries' (file, identity, list).
    pub fn from_indices<'a>(
        gallery: impl Fn(usize) -> (&'a str, i64),
        queries: impl IntoIterator<Item = (String, i64, Vec<u32>)>,
    ) -> Ranks {
        let mut index: BTreeMap<u32, u32> = BTreeMap::new();
        let mut ranks = Ranks::default();
        for (file, pid, top) in queries {
            let top = top
                .into_iter()
                .map(|j| {
                    *index.entry(j).or_insert_with(|| {
                        let (f, p) = gallery(j as usize);
                        ranks.images.push(f.to_string());
                        ranks.image_pids.push(p);
                        (ranks.images.len() - 1) as u32
                    })
                })
                .collect();
            ranks.queries.push(RankedQuery { file, pid, top });
        }
        ranks
    }
}

/// The queries model `a` answers at rank 1 and model `b` does not (`lost`), and the reverse
/// (`gained`), as indices into both evaluations' queries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flips {
    pub lost: Vec<usize>,
    pub gained: Vec<usize>,
}

/// [`Flips`] between two evaluations of the same queries (same identities in the same order:
/// otherwise an error saying how they differ).
pub fn flips(a: &crate::stats::PerQuery, b: &crate::stats::PerQuery) -> Result<Flips, String> {
    if a.pid != b.pid {
        return Err(format!(
            "the two evaluations are of different queries ({} and {} valid queries{})",
            a.len(),
            b.len(),
            if a.len() == b.len() {
                ", other identities"
            } else {
                ""
            }
        ));
    }
    let mut f = Flips::default();
    for (i, (&ra, &rb)) in a.first_rank.iter().zip(&b.first_rank).enumerate() {
        match (ra == 1, rb == 1) {
            (true, false) => f.lost.push(i),
            (false, true) => f.gained.push(i),
            _ => {}
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PerQuery;

    fn pq(pid: &[i64], first: &[u32]) -> PerQuery {
        PerQuery {
            pid: pid.to_vec(),
            ap: vec![0.5; pid.len()],
            first_rank: first.to_vec(),
            inp: vec![0.5; pid.len()],
        }
    }

    #[test]
    fn flips_are_the_rank1_disagreements_and_other_queries_are_refused() {
        let a = pq(&[1, 2, 3, 4], &[1, 1, 3, 2]);
        let b = pq(&[1, 2, 3, 4], &[1, 2, 1, 5]);
        assert_eq!(
            flips(&a, &b).unwrap(),
            Flips {
                lost: vec![1],
                gained: vec![2]
            }
        );
        let e = flips(&a, &pq(&[1, 2, 3], &[1, 1, 1])).unwrap_err();
        assert!(e.contains("4 and 3 valid queries"), "{e}");
        let e = flips(&a, &pq(&[1, 2, 3, 5], &[1, 1, 1, 1])).unwrap_err();
        assert!(e.contains("other identities"), "{e}");
    }

    #[test]
    fn lists_keep_only_the_images_they_show_once_each() {
        let gallery = ["g0.jpg", "g1.jpg", "g2.jpg", "g3.jpg"];
        let r = Ranks::from_indices(
            |j| (gallery[j], j as i64 % 2),
            [
                ("q0.jpg".to_string(), 1, vec![3, 1]),
                ("q1.jpg".to_string(), 0, vec![1, 2]),
            ],
        );
        assert_eq!(r.images, ["g3.jpg", "g1.jpg", "g2.jpg"]);
        assert_eq!(r.image_pids, [1, 1, 0]);
        assert_eq!(r.queries[1].top, [1, 2]);
        assert!(r.is_match(0, 0) && !r.is_match(1, 0) && r.is_match(1, 1));
        r.validate().unwrap();
        let mut bad = r.clone();
        bad.queries[0].top.push(7);
        assert!(bad.validate().unwrap_err().contains("lists image 7 of 3"));
    }
}
