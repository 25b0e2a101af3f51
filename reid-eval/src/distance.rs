//! Query × gallery distances by matrix product, one block of queries at a time, so memory stays
//! bounded (MSMT17: 11 659 × 82 161 would be 3.8 GB as one f32 matrix).

use candle_core::{DType, Device, Tensor, D};

use crate::metrics::{effective_max_rank, evaluate_rows, ApKind, EvalError, Labels, Metrics};

/// Distance between feature vectors.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Squared Euclidean, ‖q‖² + ‖g‖² − 2 q·g (torchreid's `euclidean`).
    #[default]
    Euclidean,
    /// 1 − q·g / (max(‖q‖, 1e-12) · max(‖g‖, 1e-12)).
    Cosine,
}

/// Queries per block: bounds the block to rows × gallery × 4 bytes.
pub const DEFAULT_BLOCK_ROWS: usize = 512;

fn to_f32_cpu(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()
}

fn l2_normalise(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// Prepared gallery side: features (normalised for cosine) and squared norms.
pub struct Gallery {
    feats_t: Tensor,
    sq_norms: Tensor,
    metric: Metric,
}

impl Gallery {
    pub fn new(gf: &Tensor, metric: Metric) -> candle_core::Result<Self> {
        let gf = to_f32_cpu(gf)?;
        let gf = match metric {
            Metric::Cosine => l2_normalise(&gf)?,
            Metric::Euclidean => gf,
        };
        let sq_norms = gf.sqr()?.sum(D::Minus1)?.unsqueeze(0)?;
        Ok(Self {
            feats_t: gf.t()?.contiguous()?,
            sq_norms,
            metric,
        })
    }

    pub fn len(&self) -> usize {
        self.sq_norms.dim(1).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distances of a block of queries [b, D] to the whole gallery → [b, G].
    pub fn distances(&self, q: &Tensor) -> candle_core::Result<Tensor> {
        let q = to_f32_cpu(q)?;
        match self.metric {
            Metric::Euclidean => {
                let qq = q.sqr()?.sum_keepdim(D::Minus1)?;
                let prod = q.matmul(&self.feats_t)?;
                qq.broadcast_add(&self.sq_norms)? - (prod * 2.0)?
            }
            Metric::Cosine => {
                let q = l2_normalise(&q)?;
                (1.0 - q.matmul(&self.feats_t)?)?.contiguous()
            }
        }
    }
}

/// Full distance matrix (small sets only; use [`evaluate_features`] at scale).
pub fn distance_matrix(qf: &Tensor, gf: &Tensor, metric: Metric) -> candle_core::Result<Tensor> {
    Gallery::new(gf, metric)?.distances(qf)
}

/// Evaluate query/gallery features block by block; never holds more than `block_rows` × G
/// distances.
pub fn evaluate_features(
    qf: &Tensor,
    gf: &Tensor,
    labels: &Labels,
    metric: Metric,
    max_rank: usize,
    ap_kind: ApKind,
    block_rows: usize,
) -> Result<Metrics, EvalError> {
    labels.validate()?;
    let cerr = |e: candle_core::Error| EvalError::Other(format!("distance computation: {e}"));
    let (nq, dq) = qf.dims2().map_err(cerr)?;
    let (ng, dg) = gf.dims2().map_err(cerr)?;
    if nq != labels.q_pids.len() {
        return Err(EvalError::Length {
            what: "q_pids",
            got: labels.q_pids.len(),
            expected: nq,
        });
    }
    if ng != labels.g_pids.len() {
        return Err(EvalError::Length {
            what: "g_pids",
            got: labels.g_pids.len(),
            expected: ng,
        });
    }
    if dq != dg {
        return Err(EvalError::Other(format!(
            "query features have dimension {dq}, gallery features {dg}"
        )));
    }
    let gallery = Gallery::new(gf, metric).map_err(cerr)?;
    let mut results = Vec::with_capacity(nq);
    let block_rows = block_rows.max(1);
    let mut first = 0;
    while first < nq {
        let rows = block_rows.min(nq - first);
        let block = gallery
            .distances(&qf.narrow(0, first, rows).map_err(cerr)?)
            .map_err(cerr)?;
        let flat: Vec<f32> = block.flatten_all().map_err(cerr)?.to_vec1().map_err(cerr)?;
        results.extend(evaluate_rows(&flat, first, labels, ap_kind)?);
        first += rows;
    }
    Metrics::from_queries(
        &results,
        &labels.q_pids,
        effective_max_rank(&labels.g_pids, max_rank),
    )
}
