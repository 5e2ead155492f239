// Preconditioning adapters and Tweedie's score on the analytic Gaussian mixture.
// The exact mixture denoiser D is rewritten as the network each parametrization would
// ideally be (predicting epsilon, x0 or v from the VP-scaled input, or EDM's F), in that
// paper's own variables; wrapping that network back must give D again. Everything is
// float64, so "the same" means agreement to ~1e-12.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { full, Generator, grad, setNumThreads, tensor, Tensor, tidy } from '../src/engine';
import { Denoiser, expandSigma, score } from '../src/core/denoiser';
import { continuousTime, discreteVPDenoiser, edmCoefficients, edmDenoiser, epsDenoiser, Network, Prediction, vDenoiser, vpCoefficients, x0Denoiser, logSigmaNoise } from '../src/core/precond';
import { cosineLogSnr, discreteVP, linearBetas, rescaleZeroTerminalSnr, sigmaFromLogSnr, tToSigma } from '../src/core/schedules';
import { GaussianMixture } from '../src/data/mixture';

setNumThreads(1);

const gmm = new GaussianMixture(
  [
    [-1, 0.5],
    [1, 0],
    [0, -1.2],
  ],
  [0.3, 0.15, 0.2],
  [0.5, 0.3, 0.2],
);
const D: Denoiser = (x, sigma) => gmm.denoise(x, sigma);
const f64 = { dtype: 'float64' as const };
const maxAbs = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

/** Noisy points x = x0 + sigma n at a spread of sigmas, [B, 2] and [B]. */
function batch(seed: number, sigmas = [0.003, 0.05, 0.3, 1, 4, 30]): { x: Tensor; sigma: Tensor } {
  const g = new Generator(seed);
  const reps = 4;
  const sigma = tensor(
    sigmas.flatMap((s) => new Array(reps).fill(s)),
    f64,
  );
  const x0 = gmm.sample(sigma.size, g, f64);
  return { x: x0.add(g.randnLike(x0).mul(sigma.unsqueeze(1))), sigma };
}

/**
 * The ideal VP network for `prediction`, from D, in Salimans & Ho's variables:
 * z = alpha x0 + s eps (VP input), alpha = 1/sqrt(1+sigma^2), s = sigma/sqrt(1+sigma^2), v = alpha eps - s x0.
 * `sigmaOf` recovers sigma from c_noise (the network's only view of the noise level).
 */
function idealVPNetwork(prediction: Prediction, sigmaOf: (cNoise: Tensor) => Tensor): Network {
  return (z, cNoise) =>
    tidy(() => {
      const sigma = sigmaOf(cNoise);
      const alpha = expandSigma(sigma.square().add(1).rsqrt(), z);
      const s = expandSigma(sigma, z).mul(alpha);
      const x0 = D(z.div(alpha), sigma);
      const eps = z.sub(x0.mul(alpha)).div(s);
      return prediction === 'eps' ? eps : prediction === 'x0' ? x0 : eps.mul(alpha).sub(x0.mul(s));
    });
}

describe('adapters give back the exact mixture denoiser', () => {
  const ddpm = discreteVP(linearBetas());

  for (const prediction of ['eps', 'x0', 'v'] as const) {
    test(`${prediction}-prediction, discrete timesteps (fractional t(sigma), log-sigma interpolation)`, () =>
      tidy(() => {
        const { x, sigma } = batch(1, [0.02, 0.05, 0.3, 1, 4, 30, 150]);
        const net = idealVPNetwork(prediction, (t) => tToSigma(ddpm, t));
        const wrapped = discreteVPDenoiser(net, ddpm, { prediction });
        const err = maxAbs(wrapped(x, sigma), D(x, sigma));
        assert.ok(err < 1e-9, `max |D_wrapped - D| = ${err}`);
      }));

    test(`${prediction}-prediction, continuous time of the cosine schedule`, () =>
      tidy(() => {
        const cos = cosineLogSnr();
        const { x, sigma } = batch(2);
        const net = idealVPNetwork(prediction, (t) => sigmaFromLogSnr(cos.logSnr(t)));
        const make = { eps: epsDenoiser, x0: x0Denoiser, v: vDenoiser }[prediction];
        const err = maxAbs(make(net, { cNoise: continuousTime(cos) })(x, sigma), D(x, sigma));
        assert.ok(err < 1e-9, `max |D_wrapped - D| = ${err}`);
      }));
  }

  test('v-prediction on a zero-terminal-SNR schedule, at finite sigmas', () =>
    tidy(() => {
      const zt = discreteVP(rescaleZeroTerminalSnr(linearBetas()));
      const { x, sigma } = batch(3, [0.02, 1, 30, 300]);
      const wrapped = discreteVPDenoiser(
        idealVPNetwork('v', (t) => tToSigma(zt, t)),
        zt,
        { prediction: 'v' },
      );
      assert.ok(maxAbs(wrapped(x, sigma), D(x, sigma)) < 1e-9);
    }));

  test('EDM: F = (D - c_skip x) / c_out, told c_noise = ln(sigma)/4 (EDM Table 1)', () =>
    tidy(() => {
      const sd = 0.5;
      const { x, sigma } = batch(4);
      const seen: number[] = [];
      const net: Network = (xIn, cNoise) => {
        seen.push(...cNoise.toFloat64Array());
        const s = cNoise.mul(4).exp(); // sigma from c_noise
        const v = expandSigma(s.square().add(sd * sd), xIn);
        const xx = xIn.mul(v.sqrt()); // undo c_in
        return D(xx, s)
          .sub(xx.mul(v.rdiv(sd * sd)))
          .div(expandSigma(s.mul(sd), xIn).div(v.sqrt()));
      };
      const err = maxAbs(edmDenoiser(net)(x, sigma), D(x, sigma));
      assert.ok(err < 1e-9, `max |D_wrapped - D| = ${err}`);
      Array.from(sigma.toFloat64Array()).forEach((s, i) => assert.ok(Math.abs(seen[i] - Math.log(s) / 4) < 1e-15));
    }));

  test('quantized discrete timesteps tell the network integer t', () =>
    tidy(() => {
      let ts: number[] = [];
      const net: Network = (xIn, t) => ((ts = Array.from(t.toFloat64Array())), xIn);
      discreteVPDenoiser(net, ddpm, { quantize: true })(
        tensor(
          [
            [0, 0],
            [1, 1],
          ],
          f64,
        ),
        tensor([0.7, 3.3], f64),
      );
      assert.ok(ts.every(Number.isInteger), `t = ${ts}`);
    }));
});

describe('coefficient table (EDM Table 1)', () => {
  test('EDM at sigma = sigma_data: c_skip = 1/2, c_out = sd/sqrt(2), c_in = 1/(sd sqrt(2)); c_noise = ln(sigma)/4', () =>
    tidy(() => {
      const c = edmCoefficients(tensor([0.5], f64), { sigmaData: 0.5 });
      assert.ok(Math.abs(c.cSkip.item() - 0.5) < 1e-15);
      assert.ok(Math.abs(c.cOut.item() - 0.5 / Math.SQRT2) < 1e-15);
      assert.ok(Math.abs(c.cIn.item() - 1 / (0.5 * Math.SQRT2)) < 1e-15);
      assert.ok(Math.abs(logSigmaNoise(tensor([Math.E ** 2], f64)).item() - 0.5) < 1e-15);
    }));

  test('v-prediction is EDM with sigma_data = 1 and F = -v', () =>
    tidy(() => {
      const sigma = tensor([0.01, 0.5, 1, 7], f64);
      const v = vpCoefficients('v', sigma, logSigmaNoise);
      const e = edmCoefficients(sigma, { sigmaData: 1 });
      assert.ok(maxAbs(v.cSkip, e.cSkip) < 1e-15 && maxAbs(v.cOut, e.cOut.neg()) < 1e-15 && maxAbs(v.cIn, e.cIn) < 1e-15);
    }));
});

describe("Tweedie's formula on the mixture", () => {
  test('score(D) = (D - x)/sigma^2 equals the closed-form score and grad_x log p_sigma', () =>
    tidy(() => {
      const { x, sigma } = batch(5, [0.05, 0.3, 1, 4]);
      const viaD = score(D, x, sigma);
      const closed = gmm.score(x, sigma);
      const xr = x.detach().requiresGrad_();
      const [auto] = grad(gmm.logDensity(xr, sigma).sum(), xr);
      assert.ok(maxAbs(viaD, closed) < 1e-9, `Tweedie vs closed form: ${maxAbs(viaD, closed)}`);
      assert.ok(maxAbs(closed, auto!) < 1e-9, `closed form vs autograd: ${maxAbs(closed, auto!)}`);
    }));

  test('the exact denoiser is the identity at sigma -> 0 and the mixture mean at sigma -> infinity', () =>
    tidy(() => {
      const x = tensor(
        [
          [0.3, -0.2],
          [2, 1],
        ],
        f64,
      );
      assert.ok(maxAbs(D(x, full([2], 1e-8, f64)), x) < 1e-8);
      const mean = gmm.weights.unsqueeze(1).mul(gmm.means).sum(0);
      assert.ok(maxAbs(D(x, full([2], 1e6, f64)), mean.unsqueeze(0).expand([2, 2])) < 1e-6);
    }));
});
