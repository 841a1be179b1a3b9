//! AdamW and the learning-rate schedule, written out so that their state can be checkpointed
//! (`tch`'s optimizers do not expose it) and so that they match `torch.optim.AdamW` and
//! `transformers`' schedules step for step.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::error::{Error, Result};

/// Linear warmup from 0, then linear decay to 0 (`linear`) or a constant rate (`constant`),
/// as `get_linear_schedule_with_warmup` / `get_constant_schedule_with_warmup`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: bool,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else if self.decay {
            let remaining = self.total_steps.saturating_sub(step) as f64;
            (remaining / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64).max(0.0)
        } else {
            1.0
        };
        self.base_lr * factor
    }
}

/// Decoupled-weight-decay Adam over named variables.
///
/// The variables are re-pointed at views of one contiguous buffer, and the moments live in
/// buffers of the same layout, so that an update is a handful of whole-buffer operations
/// instead of several per variable (which dominates for small encoders). The arithmetic is
/// `torch.optim.AdamW`'s, element by element.
pub struct AdamW {
    names: Vec<String>,
    params: Vec<Tensor>,
    /// `(offset, numel)` of each variable in the flat buffers.
    spans: Vec<(i64, i64)>,
    flat: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// 1 where weight decay applies, 0 elsewhere.
    decay_mask: Tensor,
    /// The gradients of the current step, gathered once.
    flat_grad: Option<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Updates done so far (for bias correction).
    steps: i64,
}

/// Whether `transformers`' Trainer applies weight decay to a variable: not to biases and not to
/// LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl AdamW {
    /// Takes over `variables` (all of one dtype and device).
    pub fn new(
        variables: impl IntoIterator<Item = (String, Tensor)>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Self {
        let mut variables: Vec<(String, Tensor)> = variables.into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut spans = Vec::with_capacity(variables.len());
        let mut offset = 0;
        for (_, param) in &variables {
            let numel = param.numel() as i64;
            spans.push((offset, numel));
            offset += numel;
        }
        let pieces: Vec<Tensor> = variables
            .iter()
            .map(|(_, p)| p.detach().reshape([-1]))
            .collect();
        let flat = if pieces.is_empty() {
            Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu))
        } else {
            Tensor::cat(&pieces, 0)
        };
        let masks: Vec<Tensor> = variables
            .iter()
            .map(|(name, p)| {
                let value = if decays(name) { 1.0 } else { 0.0 };
                Tensor::full([p.numel() as i64], value, (p.kind(), p.device()))
            })
            .collect();
        let decay_mask = if masks.is_empty() {
            flat.zeros_like()
        } else {
            Tensor::cat(&masks, 0)
        };
        let (mut names, mut params) = (Vec::new(), Vec::new());
        tch::no_grad(|| {
            for ((name, mut param), &(offset, numel)) in variables.into_iter().zip(&spans) {
                let view = flat.narrow(0, offset, numel).view(param.size().as_slice());
                param.set_data(&view);
                names.push(name);
                params.push(param);
            }
        });
        Self {
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            names,
            params,
            spans,
            flat,
            decay_mask,
            flat_grad: None,
            beta1,
            beta2,
            eps,
            weight_decay,
            steps: 0,
        }
    }

    /// The gradients of this step as one buffer (zeros for variables without gradient).
    fn grads(&mut self) -> &mut Tensor {
        if self.flat_grad.is_none() {
            let pieces: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if g.defined() {
                        g.reshape([-1])
                    } else {
                        Tensor::zeros([p.numel() as i64], (p.kind(), p.device()))
                    }
                })
                .collect();
            self.flat_grad = Some(if pieces.is_empty() {
                self.flat.zeros_like()
            } else {
                Tensor::cat(&pieces, 0)
            });
        }
        self.flat_grad.as_mut().expect("just set")
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) {
        self.flat_grad = None;
        for param in &self.params {
            let mut grad = param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping, as a scalar tensor
    /// on the device. Everything happens there: the step never waits for the norm to reach the
    /// host (gradients under the limit are multiplied by exactly 1).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let grads = self.grads();
        let total = grads.norm();
        let coef = (total.full_like(max_norm) / (&total + 1e-6)).clamp_max(1.0);
        let _ = grads.g_mul_(&coef);
        total
    }

    /// Multiplies every gradient by `factor`; false when any gradient is not finite.
    pub fn unscale_grads(&mut self, factor: f64) -> bool {
        let grads = self.grads();
        let _ = grads.g_mul_scalar_(factor);
        bool::try_from(grads.isfinite().all()).unwrap_or(false)
    }

    /// One update with learning rate `lr`, exactly as `torch.optim.AdamW` (non-amsgrad).
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let bias1 = 1.0 - self.beta1.powi(self.steps as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.steps as i32)).sqrt();
        let grad = self.grads().shallow_clone();
        tch::no_grad(|| {
            if self.weight_decay != 0.0 {
                let factor = 1.0 - (&self.decay_mask * (lr * self.weight_decay));
                let _ = self.flat.g_mul_(&factor);
            }
            let _ = self.exp_avg.lerp_(&grad, 1.0 - self.beta1);
            let _ = self
                .exp_avg_sq
                .g_mul_scalar_(self.beta2)
                .addcmul_(&grad, &(&grad * (1.0 - self.beta2)));
            let denom = self.exp_avg_sq.sqrt() / bias2_sqrt + self.eps;
            let _ = self.flat.addcdiv_(&(&self.exp_avg * (-lr / bias1)), &denom);
        });
    }

    /// Updates done so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The moments as named tensors (`<name>.exp_avg`, `<name>.exp_avg_sq`) plus the step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("steps".to_owned(), Tensor::from_slice(&[self.steps]))];
        for (name, &(offset, numel)) in self.names.iter().zip(&self.spans) {
            state.push((
                format!("{name}.exp_avg"),
                self.exp_avg.narrow(0, offset, numel),
            ));
            state.push((
                format!("{name}.exp_avg_sq"),
                self.exp_avg_sq.narrow(0, offset, numel),
            ));
        }
        state
    }

    /// Restores moments saved by [`state`](Self::state); every variable must be present.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let get = |key: &str| {
            state
                .get(key)
                .ok_or_else(|| Error::Config(format!("optimizer state lacks `{key}`")))
        };
        self.steps = i64::try_from(get("steps")?)?;
        tch::no_grad(|| -> Result<()> {
            for (name, &(offset, numel)) in self.names.iter().zip(&self.spans) {
                for (suffix, moment) in
                    [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
                {
                    let saved = get(&format!("{name}.{suffix}"))?;
                    if saved.numel() as i64 != numel {
                        return Err(Error::Config(format!(
                            "optimizer state `{name}.{suffix}` has {} values, the model {numel}",
                            saved.numel()
                        )));
                    }
                    moment
                        .narrow(0, offset, numel)
                        .f_copy_(&saved.reshape([-1]))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn schedule_warms_up_then_decays_like_transformers() {
        let s = Schedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            decay: true,
        };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(5), 0.5);
        assert_eq!(s.lr(10), 1.0);
        assert_eq!(s.lr(60), 0.5);
        assert_eq!(s.lr(110), 0.0);
        let constant = Schedule { decay: false, ..s };
        assert_eq!(constant.lr(100), 1.0);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        // First step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g),
        // after decoupled decay p *= 1 - lr * wd.
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
        loss.backward();
        let mut opt = AdamW::new(
            [("w.weight".to_owned(), p.shallow_clone())],
            0.9,
            0.999,
            1e-8,
            0.1,
        );
        opt.step(0.01);
        let got: Vec<f32> = p.detach().try_into().unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert!(!decays("encoder.embeddings.LayerNorm.weight") && !decays("classifier.bias"));
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let p = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let mut opt = AdamW::new([("w".to_owned(), p.shallow_clone())], 0.9, 0.999, 1e-8, 0.0);
        assert!((f64::try_from(opt.clip_grad_norm(1.0)).unwrap() - 5.0).abs() < 1e-6);
        let clipped: Vec<f32> = opt.grads().shallow_clone().try_into().unwrap();
        assert!((clipped[0] - 0.6).abs() < 1e-5 && (clipped[1] - 0.8).abs() < 1e-5);
        // Under the limit, gradients stay exactly as they are.
        let _ = opt.clip_grad_norm(10.0);
        let unchanged: Vec<f32> = opt.grads().shallow_clone().try_into().unwrap();
        assert_eq!(unchanged, clipped);
    }
}
