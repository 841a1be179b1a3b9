//! The encoder's linear maps: one type, [`Linear`], whose forms sit behind one `forward` family.
//!
//! | form ([`MapForm`]) | what runs | where |
//! |---|---|---|
//! | `Standard` | libtorch's `linear` on the variables, with gradients; autocast applies | training; inference off the CPU or without oneDNN |
//! | `Fused` | oneDNN products with the bias, the activation or the residual addition fused in (`csrc/fused.cpp`), float32 | CPU inference in `fp32` |
//! | `FusedBf16` | the same on bfloat16 copies of the weights, bfloat16 activations between them (products accumulate in float32) | CPU inference in `bf16` |
//! | `Int8` | int8 weights (one scale per output channel), activations quantised per call, through fbgemm (`csrc/quantized.cpp`), as `torch.ao.quantization.quantize_dynamic` | CPU inference in `int8` |
//!
//! The derived forms (all but `Standard`) are made from the variables on first use and again
//! whenever a weight changed since ([`FormCache`]); they carry no gradient. Adding a form is a
//! variant of [`MapForm`] and of [`Linear`] with its arm in each method here, and its rule in
//! [`ForwardPlan::new`](super::plan::ForwardPlan::new).

use std::sync::{Arc, Mutex};

use tch::nn;
use tch::{Kind, Tensor};

use super::dropout::dropout_add;
use crate::error::Result;
use crate::ffi::{self, Int8Linear, PostOp};

/// How the encoder's linear maps run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapForm {
    /// libtorch's `linear`, with gradients, on any device and under autocast.
    Standard,
    /// oneDNN with the bias, activation and residual addition fused in, float32 (CPU).
    Fused,
    /// [`Fused`](Self::Fused) on bfloat16 copies of the weights (CPU).
    FusedBf16,
    /// int8 weights through fbgemm (CPU).
    Int8,
}

impl MapForm {
    /// The type of the activations the maps read and write.
    pub fn activation_kind(self) -> Kind {
        match self {
            Self::FusedBf16 => Kind::BFloat16,
            Self::Standard | Self::Fused | Self::Int8 => Kind::Float,
        }
    }
}

/// The activation of the feed-forward block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub(crate) fn from_name(name: &str) -> std::result::Result<Self, String> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => return Err(format!("hidden_act {other:?} is not implemented")),
        })
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }

    /// [`apply`](Self::apply) in place, for inference results that nothing else holds.
    fn apply_in_place(self, mut x: Tensor) -> Tensor {
        let _ = match self {
            Self::Gelu => x.gelu_("none"),
            Self::GeluTanh => x.gelu_("tanh"),
            Self::Relu => x.relu_(),
            Self::Silu => x.silu_(),
        };
        x
    }

    /// The oneDNN post-op computing this activation, if there is one.
    fn post_op(self) -> Option<PostOp> {
        match self {
            Self::Gelu => Some(PostOp::Gelu),
            Self::GeluTanh => Some(PostOp::GeluTanh),
            Self::Relu => Some(PostOp::Relu),
            Self::Silu => None,
        }
    }
}

/// A weight and its bias.
type Map = (Tensor, Option<Tensor>);

/// One linear map in one [`MapForm`]. A map may stand for several variables concatenated
/// along their outputs (query, key and value as one `[3H, H]` product).
pub(crate) enum Linear {
    /// The variables themselves, concatenated on each call so that gradients reach each.
    Standard(Vec<Map>),
    /// float32 or bfloat16 weights for the oneDNN kernels.
    Fused(Map),
    Int8(Arc<Int8Linear>),
}

impl Clone for Linear {
    /// Another handle on the same map (tensors share their storage, packed weights their
    /// handle).
    fn clone(&self) -> Self {
        let map = |(w, b): &Map| (w.shallow_clone(), b.as_ref().map(Tensor::shallow_clone));
        match self {
            Self::Standard(parts) => Self::Standard(parts.iter().map(map).collect()),
            Self::Fused(weights) => Self::Fused(map(weights)),
            Self::Int8(packed) => Self::Int8(packed.clone()),
        }
    }
}

impl Linear {
    /// The variables `parts` in `form` (the derived forms are made without gradients).
    pub(crate) fn new(form: MapForm, parts: &[&nn::Linear]) -> Result<Self> {
        let parts: Vec<Map> = parts
            .iter()
            .map(|m| {
                (
                    m.ws.shallow_clone(),
                    m.bs.as_ref().map(Tensor::shallow_clone),
                )
            })
            .collect();
        if form == MapForm::Standard {
            return Ok(Self::Standard(parts));
        }
        let (weight, bias) = tch::no_grad(|| concatenated(&parts));
        Ok(match form {
            MapForm::Standard => unreachable!("handled above"),
            MapForm::Fused | MapForm::FusedBf16 => {
                let kind = form.activation_kind();
                let bias = bias.map(|b| b.to_kind(kind));
                Self::Fused((weight.to_kind(kind), bias))
            }
            MapForm::Int8 => Self::Int8(Arc::new(Int8Linear::pack(&weight, bias.as_ref())?)),
        })
    }

    /// `x W^T + b`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Standard(parts) => {
                let (weight, bias) = concatenated(parts);
                Ok(x.linear(&weight, bias.as_ref()))
            }
            Self::Fused((weight, bias)) => {
                ffi::fused_linear(x, weight, bias.as_ref(), PostOp::None)
            }
            Self::Int8(packed) => packed.forward(x),
        }
    }

    /// `activation(x W^T + b)`, fused into the product where oneDNN has it as a post-op.
    pub(crate) fn forward_activation(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        match (self, activation.post_op()) {
            (Self::Standard(_), _) => Ok(activation.apply(&self.forward(x)?)),
            (Self::Fused((weight, bias)), Some(post)) => {
                ffi::fused_linear(x, weight, bias.as_ref(), post)
            }
            (Self::Fused(_) | Self::Int8(_), _) => Ok(activation.apply_in_place(self.forward(x)?)),
        }
    }

    /// `dropout(x W^T + b) + residual`, dropout with probability `p` when `train` (only the
    /// standard form trains).
    pub(crate) fn forward_add(
        &self,
        x: &Tensor,
        residual: &Tensor,
        p: f64,
        train: bool,
    ) -> Result<Tensor> {
        debug_assert!(
            !train || matches!(self, Self::Standard(_)),
            "only the standard maps carry gradients"
        );
        match self {
            Self::Standard(_) => dropout_add(&self.forward(x)?, Some(residual), p, train),
            Self::Fused((weight, bias)) => {
                ffi::fused_linear_add(x, residual, weight, bias.as_ref())
            }
            Self::Int8(packed) => {
                let mut y = packed.forward(x)?;
                let _ = y.g_add_(residual);
                Ok(y)
            }
        }
    }
}

/// `parts` as one map: their weights (and biases, when all have one) stacked along the outputs.
fn concatenated(parts: &[Map]) -> Map {
    if let [(weight, bias)] = parts {
        return (
            weight.shallow_clone(),
            bias.as_ref().map(Tensor::shallow_clone),
        );
    }
    let weights: Vec<&Tensor> = parts.iter().map(|(w, _)| w).collect();
    let biases: Option<Vec<&Tensor>> = parts.iter().map(|(_, b)| b.as_ref()).collect();
    (Tensor::cat(&weights, 0), biases.map(|b| Tensor::cat(&b, 0)))
}

/// The four linear maps of an encoder layer, in one form.
#[derive(Clone)]
pub(crate) struct LayerMaps {
    /// Query, key and value as one map.
    pub query_key_value: Linear,
    pub attention_output: Linear,
    pub intermediate: Linear,
    pub output: Linear,
}

/// Every layer's maps in one form (cloned cheaply: handles on the same maps).
#[derive(Clone)]
pub(crate) struct EncoderMaps {
    pub form: MapForm,
    pub layers: Vec<LayerMaps>,
}

/// A tensor's identity for staleness: its version counter (bumped by every in-place change, an
/// optimizer step or a checkpoint copy) and its storage.
type Identity = (i64, usize);

/// The identities of a map's weight and bias.
type Source = (Identity, Option<Identity>);

fn identity(linear: &nn::Linear) -> Source {
    let of = |t: &Tensor| (t.internal_version(), t.data_ptr() as usize);
    (of(&linear.ws), linear.bs.as_ref().map(of))
}

/// The derived forms of an encoder's maps made so far, each with the identities of the
/// variables it was made from.
#[derive(Default)]
pub(crate) struct FormCache {
    forms: Mutex<Vec<(Vec<Source>, EncoderMaps)>>,
}

impl FormCache {
    /// The maps in `form`: the standard ones afresh (they are the variables), a derived form as
    /// made before unless one of `variables` changed since, else made by `make` (a stale form
    /// is dropped first: never two copies at once).
    pub(crate) fn get<'a>(
        &self,
        form: MapForm,
        variables: impl Iterator<Item = &'a nn::Linear>,
        make: impl FnOnce() -> Result<Vec<LayerMaps>>,
    ) -> Result<EncoderMaps> {
        let made = |layers| EncoderMaps { form, layers };
        if form == MapForm::Standard {
            return Ok(made(make()?));
        }
        let sources: Vec<_> = variables.map(identity).collect();
        let mut forms = self.forms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_from, maps)) = forms.iter().find(|(_, maps)| maps.form == form) {
            if *made_from == sources {
                return Ok(maps.clone());
            }
        }
        forms.retain(|(_, maps)| maps.form != form);
        let maps = made(tch::no_grad(make)?);
        forms.push((sources, maps.clone()));
        Ok(maps)
    }

    /// Drops every derived form (after the weights moved to another device, whose old storage
    /// they would keep alive).
    pub(crate) fn clear(&self) {
        self.forms.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;

    #[test]
    fn every_form_computes_the_standard_maps() {
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let parts: Vec<nn::Linear> = (0..3)
            .map(|i| nn::linear(vs.root() / i, 24, 16, Default::default()))
            .collect();
        let part_refs: Vec<&nn::Linear> = parts.iter().collect();
        let x = Tensor::randn([37, 24], opts);
        let residual = Tensor::randn([37, 48], opts);
        let standard = Linear::new(MapForm::Standard, &part_refs).unwrap();
        let plain = tch::no_grad(|| standard.forward(&x).unwrap());
        let by_hand = Tensor::cat(&parts.iter().map(|m| m.forward(&x)).collect::<Vec<_>>(), 1);
        assert!(plain.allclose(&by_hand, 1e-6, 1e-6, false));
        let mut forms = vec![(MapForm::Int8, 0.05)];
        if ffi::fused_supported() {
            forms.push((MapForm::Fused, 1e-5));
            if crate::device::cpu_has_bf16() {
                forms.push((MapForm::FusedBf16, 0.05));
            }
        }
        for (form, tolerance) in forms {
            let map = Linear::new(form, &part_refs).unwrap();
            let close = |got: Tensor, want: &Tensor| {
                let got = got.to_kind(Kind::Float);
                let diff = f64::try_from((got - want).abs().max()).unwrap();
                let scale = f64::try_from(want.abs().max()).unwrap();
                assert!(diff <= tolerance * scale, "{form:?}: {diff} of {scale}");
            };
            let input = x.to_kind(form.activation_kind());
            tch::no_grad(|| {
                close(map.forward(&input).unwrap(), &plain);
                for activation in [
                    Activation::Gelu,
                    Activation::GeluTanh,
                    Activation::Relu,
                    Activation::Silu,
                ] {
                    close(
                        map.forward_activation(&input, activation).unwrap(),
                        &activation.apply(&plain),
                    );
                }
                let residual_in = residual.to_kind(form.activation_kind());
                close(
                    map.forward_add(&input, &residual_in, 0.1, false).unwrap(),
                    &(&plain + &residual),
                );
                // A non-contiguous input (a column slice) is read correctly.
                let wide = Tensor::cat(&[&input, &input], 1).narrow(1, 24, 24);
                close(map.forward(&wide).unwrap(), &plain);
            });
        }
    }

    #[test]
    fn a_derived_form_follows_its_variables() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let map = nn::linear(vs.root(), 8, 4, Default::default());
        let cache = FormCache::default();
        let made = std::cell::Cell::new(0);
        let get = || {
            cache
                .get(MapForm::Fused, [&map].into_iter(), || {
                    made.set(made.get() + 1);
                    Ok(vec![])
                })
                .unwrap()
        };
        get();
        get();
        assert_eq!(made.get(), 1, "made twice");
        tch::no_grad(|| {
            let _ = map.ws.shallow_clone().fill_(0.5);
        });
        get();
        assert_eq!(made.get(), 2, "a stale form was kept");
        get();
        cache.clear();
        get();
        assert_eq!(made.get(), 3, "a cleared form was kept");
    }
}
