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
    /// Every index in range, one identity per image, every image a path inside the dataset's
    /// folder (relative, without `..`: a list never shows a file from elsewhere).
    pub fn validate(&self) -> Result<(), String> {
        if self.images.len() != self.image_pids.len() {
            return Err(format!(
                "{} images but {} image identities",
                self.images.len(),
                self.image_pids.len()
            ));
        }
        for file in self
            .images
            .iter()
            .chain(self.queries.iter().map(|q| &q.file))
        {
            inside_root(file)?;
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

/// `file` names a path under a dataset's folder: relative, no `..`, no root or prefix.
fn inside_root(file: &str) -> Result<(), String> {
    use std::path::Component;
    let ok = !file.is_empty()
        && std::path::Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image '{file}' is not a path inside the dataset's folder (relative, without '..')"
        ))
    }
}

/// Whether `ranks` lists the queries of `per_query` (the same evaluation): the same number,
/// each query's identity, and each list's first true match at the query's first-match rank
/// (or, when the list shows none, a rank beyond it). The error names the first query that
/// disagrees.
pub fn check_against(ranks: &Ranks, per_query: &crate::stats::PerQuery) -> Result<(), String> {
    if ranks.queries.len() != per_query.len() {
        return Err(format!(
            "ranked lists of {} queries beside per-query results of {}",
            ranks.queries.len(),
            per_query.len()
        ));
    }
    for (i, q) in ranks.queries.iter().enumerate() {
        let first = per_query.first_rank[i] as usize;
        let hit = (0..q.top.len()).find(|&r| ranks.is_match(i, r));
        let agrees = q.pid == per_query.pid[i]
            && match hit {
                Some(r) => r + 1 == first,
                None => first > q.top.len(),
            };
        if !agrees {
            return Err(format!(
                "query {i} ({}): its ranked list disagrees with its per-query result (identity {} \
                 vs {}, first match at {} vs rank {first})",
                q.file,
                q.pid,
                per_query.pid[i],
                hit.map_or("none shown".to_string(), |r| format!("{}", r + 1))
            ));
        }
    }
    Ok(())
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
        // no file outside the dataset's folder
        for outside in ["/etc/passwd", "../x.jpg", "a/../../b.jpg", ""] {
            let mut bad = r.clone();
            bad.images[0] = outside.into();
            let e = bad.validate().unwrap_err();
            assert!(
                e.contains("not a path inside the dataset's folder"),
                "{outside}: {e}"
            );
            let mut bad = r.clone();
            bad.queries[1].file = outside.into();
            assert!(bad.validate().is_err(), "{outside}");
        }
    }

    /// Ranked lists that are not of the per-query results' evaluation (reordered, of another
    /// model, with other identities) are told apart.
    #[test]
    fn lists_are_checked_against_their_per_query_results() {
        let gallery = ["g0.jpg", "g1.jpg", "g2.jpg"];
        let r = Ranks::from_indices(
            |j| (gallery[j], [5, 6, 5][j]),
            [
                ("q0.jpg".to_string(), 5, vec![1, 0]),
                ("q1.jpg".to_string(), 6, vec![1, 2]),
            ],
        );
        let pq = PerQuery {
            pid: vec![5, 6],
            ap: vec![0.5, 1.0],
            first_rank: vec![2, 1],
            inp: vec![0.5, 1.0],
        };
        check_against(&r, &pq).unwrap();
        // a first match beyond the list is fine
        let mut far = r.clone();
        far.queries[0].top = vec![0];
        let mut pq_far = pq.clone();
        pq_far.first_rank[0] = 7;
        check_against(&far, &pq_far).unwrap();
        // reordered queries, another identity, another first rank, another count
        let mut swapped = r.clone();
        swapped.queries.reverse();
        assert!(check_against(&swapped, &pq)
            .unwrap_err()
            .contains("query 0"));
        let mut other = pq.clone();
        other.first_rank[1] = 2;
        assert!(check_against(&r, &other)
            .unwrap_err()
            .contains("query 1 (q1.jpg)"));
        let mut near = pq.clone();
        near.first_rank[0] = 1;
        assert!(check_against(&far, &near).is_err());
        let mut fewer = pq.clone();
        fewer.pid.pop();
        fewer.ap.pop();
        fewer.first_rank.pop();
        fewer.inp.pop();
        assert!(check_against(&r, &fewer)
            .unwrap_err()
            .contains("of 2 queries beside"));
    }
}
