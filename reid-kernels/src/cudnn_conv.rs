//! A convolution whose backward runs on cuDNN (CUDA devices, `cudnn` feature).
//!
//! candle 0.11 uses cuDNN for a conv's forward only: the input gradient goes through its naive
//! `conv_transpose2d` kernel and the weight gradient through a forward conv of transposed
//! copies, which makes GPU training of a ResNet many times slower than PyTorch's. Here the
//! forward, the input gradient (`cudnnConvolutionBackwardData`) and the weight gradient
//! (`cudnnConvolutionBackwardFilter`) are one candle op each, with cuDNN's heuristics picking
//! the algorithm. f32, NCHW, square kernels, one stride and padding for both axes: the convs
//! of a ResNet. Other dtypes and devices keep candle's conv.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn,
    FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};

thread_local! {
    // cuDNN handles are neither Send nor Sync: one a thread and device, made once.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Stride and padding of the conv (dilation 1, one group).
#[derive(Clone, Copy, Debug)]
struct ConvParams {
    stride: usize,
    pad: usize,
}

/// The descriptors of one conv: input [n, cin, h, w], filter [cout, cin, k, k], output.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn dims4(shape: &Shape, what: &str) -> Result<[i32; 4]> {
    let (a, b, c, d) = shape.dims4()?;
    let mut out = [0i32; 4];
    for (o, v) in out.iter_mut().zip([a, b, c, d]) {
        *o = i32::try_from(v).map_err(|_| {
            candle_core::Error::Msg(format!(
                "cudnn conv: {what} {shape:?} is too large for cuDNN"
            ))
        })?;
    }
    Ok(out)
}

impl ConvParams {
    fn out_dims(&self, x: [i32; 4], w: [i32; 4]) -> [i32; 4] {
        let (s, p) = (self.stride as i32, self.pad as i32);
        let out = |len: i32| (len + 2 * p - w[2]) / s + 1;
        [x[0], w[0], out(x[2]), out(x[3])]
    }

    fn descriptors(&self, dev: &CudaDevice, x: [i32; 4], w: [i32; 4]) -> Result<Descriptors> {
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
        let cudnn = handle(dev)?;
        let e = candle_core::Error::wrap;
        let (s, p) = (self.stride as i32, self.pad as i32);
        let mut conv = cudnn
            .create_conv2d::<f32>(
                [p, p],
                [s, s],
                [1, 1],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(e)?;
        // exact f32 (no TF32 tensor-core rounding): results must track the CPU's
        conv.set_math_type(sys::cudnnMathType_t::CUDNN_DEFAULT_MATH)
            .map_err(e)?;
        Ok(Descriptors {
            x: cudnn.create_4d_tensor::<f32>(NCHW, x).map_err(e)?,
            w: cudnn.create_4d_filter::<f32>(NCHW, w).map_err(e)?,
            y: cudnn
                .create_4d_tensor::<f32>(NCHW, self.out_dims(x, w))
                .map_err(e)?,
            conv,
        })
    }
}

/// A contiguous f32 tensor's device memory from its first element.
fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("cudnn conv: the {what} must be contiguous");
    }
    let slice: &CudaSlice<f32> = s.as_cuda_slice::<f32>()?;
    Ok(slice.slice(l.start_offset()..l.start_offset() + l.shape().elem_count()))
}

fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    Ok(if bytes == 0 {
        None
    } else {
        Some(dev.alloc_zeros::<u8>(bytes)?)
    })
}

fn not_on_cpu(name: &str) -> Result<(CpuStorage, Shape)> {
    candle_core::bail!("{name} runs on CUDA only (CPU tensors take the gemm conv)")
}

/// One cuDNN call of a conv: the forward or a gradient.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// y from (x, w): `cudnnConvolutionForward`.
    Forward,
    /// dL/dx from (w, dL/dy): `cudnnConvolutionBackwardData`.
    Input,
    /// dL/dw from (x, dL/dy): `cudnnConvolutionBackwardFilter`.
    Weight,
}

/// Run `pass` of the conv with input dims `xd` and weight dims `wd` on the operands `(a, b)`
/// ((x, w), (w, dy) or (x, dy), as [`Pass`] says), into a new buffer of `out_len` values.
fn run_pass(
    p: ConvParams,
    pass: Pass,
    dev: &CudaDevice,
    (xd, wd): ([i32; 4], [i32; 4]),
    (a, b): (&CudaView<f32>, &CudaView<f32>),
    out_len: usize,
) -> Result<CudaSlice<f32>> {
    let d = p.descriptors(dev, xd, wd)?;
    let e = candle_core::Error::wrap;
    let (conv, x, w, y) = (&d.conv, &d.x, &d.w, &d.y);
    // SAFETY: beta = 0 below: cuDNN writes every element without reading it.
    let mut out = unsafe { dev.alloc::<f32>(out_len)? };
    // SAFETY (each launch): the descriptors describe these contiguous NCHW f32 buffers.
    match pass {
        Pass::Forward => {
            let op = ConvForward { conv, x, w, y };
            let algo = op.pick_algorithm().map_err(e)?;
            let mut ws = workspace(dev, op.get_workspace_size(algo).map_err(e)?)?;
            unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), a, b, &mut out) }
        }
        Pass::Input => {
            let op = ConvBackwardData {
                conv,
                dx: x,
                w,
                dy: y,
            };
            let algo = op.pick_algorithm().map_err(e)?;
            let mut ws = workspace(dev, op.get_workspace_size(algo).map_err(e)?)?;
            unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), &mut out, a, b) }
        }
        Pass::Weight => {
            let op = ConvBackwardFilter {
                conv,
                x,
                dw: w,
                dy: y,
            };
            let algo = op.pick_algorithm().map_err(e)?;
            let mut ws = workspace(dev, op.get_workspace_size(algo).map_err(e)?)?;
            unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), a, &mut out, b) }
        }
    }
    .map_err(e)?;
    Ok(out)
}

/// y = conv(x, w); backward through two [`ConvGrad`]s.
struct CudnnConv2d(ConvParams);

impl CustomOp2 for CudnnConv2d {
    fn name(&self) -> &'static str {
        "cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        not_on_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (xd, wd) = (dims4(xl.shape(), "input")?, dims4(wl.shape(), "weight")?);
        let yd = self.0.out_dims(xd, wd);
        let shape = Shape::from(yd.map(|v| v as usize).to_vec());
        let (x, w) = (view(xs, xl, "input")?, view(ws, wl, "weight")?);
        let y = run_pass(
            self.0,
            Pass::Forward,
            dev,
            (xd, wd),
            (&x, &w),
            shape.elem_count(),
        )?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let grad = |of, shape: &Shape| ConvGrad {
            p: self.0,
            of,
            shape: shape.clone(),
        };
        let gx = w.apply_op2_no_bwd(&gy, &grad(Pass::Input, x.shape()))?;
        let gw = x.apply_op2_no_bwd(&gy, &grad(Pass::Weight, w.shape()))?;
        Ok((Some(gx), Some(gw)))
    }
}

/// A conv gradient; `shape` is the shape of the tensor it is the gradient of.
struct ConvGrad {
    p: ConvParams,
    /// [`Pass::Input`] or [`Pass::Weight`].
    of: Pass,
    shape: Shape,
}

impl CustomOp2 for ConvGrad {
    fn name(&self) -> &'static str {
        match self.of {
            Pass::Input => "cudnn-conv2d-backward-data",
            _ => "cudnn-conv2d-backward-filter",
        }
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        not_on_cpu(self.name())
    }

    /// `a`: the weight (input gradient) or the input (weight gradient).
    fn cuda_fwd(
        &self,
        a: &CudaStorage,
        al: &Layout,
        gys: &CudaStorage,
        gyl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &a.device;
        let (xd, wd) = match self.of {
            Pass::Input => (dims4(&self.shape, "input")?, dims4(al.shape(), "weight")?),
            _ => (dims4(al.shape(), "input")?, dims4(&self.shape, "weight")?),
        };
        if dims4(gyl.shape(), "output gradient")? != self.p.out_dims(xd, wd) {
            candle_core::bail!(
                "cudnn conv: output gradient {:?} does not fit the conv",
                gyl.shape()
            );
        }
        let (a, gy) = (view(a, al, "operand")?, view(gys, gyl, "output gradient")?);
        let out = run_pass(
            self.p,
            self.of,
            dev,
            (xd, wd),
            (&a, &gy),
            self.shape.elem_count(),
        )?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            self.shape.clone(),
        ))
    }
}

/// conv2d (cross-correlation, dilation 1, one group) of f32 NCHW CUDA tensors with a square
/// kernel, its forward and both gradients on cuDNN. `None` where it does not apply (another
/// device or dtype, a non-square kernel): the caller uses candle's conv then.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Option<Tensor>> {
    let applies = x.device().is_cuda()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == candle_core::DType::F32
        && x.rank() == 4
        && w.rank() == 4
        && w.dim(2)? == w.dim(3)?
        && w.dim(1)? == x.dim(1)?;
    if !applies {
        return Ok(None);
    }
    let p = ConvParams { stride, pad };
    x.contiguous()?
        .apply_op2(&w.contiguous()?, CudnnConv2d(p))
        .map(Some)
}
