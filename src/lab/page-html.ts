/**
 * The lab's page: five panels, each with its controls, its picture and a short explanation
 * with the equation (readable without the pictures). The behaviour is the bundled
 * src/lab/page/main.ts (served as /lab.js); nothing is loaded from elsewhere, so it works offline.
 */

const STYLE = `
body { font: 15px/1.45 'DejaVu Sans', sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 16px 40px; color: #222; }
section { border-top: 1px solid #ccc; padding: 8px 0 16px; }
h1 { margin: 16px 0 4px; } h2 { margin: 8px 0; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.controls { display: grid; grid-template-columns: auto auto; gap: 4px 8px; align-items: center; font-size: 14px; }
.explain { max-width: 520px; font-size: 14px; }
.eq { font-family: 'DejaVu Sans Mono', monospace; background: #f4f4f4; padding: 4px 6px; display: block; margin: 4px 0; white-space: pre-wrap; }
canvas { border: 1px solid #ddd; background: #fff; }
img.pix { image-rendering: pixelated; border: 1px solid #ddd; }
.status { font-size: 13px; color: #555; min-height: 1.2em; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; text-align: center; }
`;

/** A sampler the page offers: its registry name and one-line description. */
export interface PageSampler {
  name: string;
  description: string;
}

const escapeHtml = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The sampling panel's options: every registered sampler, its description as the tooltip, `selected` first choice. */
function samplerOptions(samplers: readonly PageSampler[], selected: string): string {
  return samplers.map((s) => `<option value="${escapeHtml(s.name)}" title="${escapeHtml(s.description)}"${s.name === selected ? ' selected' : ''}>${escapeHtml(s.name)}</option>`).join('');
}

/**
 * The page's HTML; `samplers` fills the sampling panel's choice (the server passes the sampler registry).
 *
 * @example
 *   pageHtml(Object.values(SAMPLERS).map((s) => s.info)); // every sampler of `diffuse samplers`
 */
export function pageHtml(samplers: readonly PageSampler[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Diffuse lab</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style></head>
<body>
<h1>Diffuse lab</h1>
<p>Every idea of the tutorial, moving, on the project's own models. Each panel computes on this machine with the Diffuse engine.</p>

<section id="panel-forward" data-panel="forward">
<h2>1. The forward process</h2>
<div class="row">
  <div class="controls">
    <label for="fw-schedule">schedule</label><select id="fw-schedule"><option>linear</option><option selected>cosine</option><option value="shifted">cosine shifted to resolution</option></select>
    <label for="fw-t">t</label><input id="fw-t" type="range" min="0" max="999" value="300">
    <label for="fw-res">resolution (shifted)</label><select id="fw-res"><option>64</option><option selected>128</option><option>256</option></select>
    <label for="fw-index">image</label><input id="fw-index" type="number" min="0" max="15" value="0">
  </div>
  <figure><img id="fw-clean" class="pix" width="128" height="128" alt="x0"><figcaption>x<sub>0</sub></figcaption></figure>
  <figure><img id="fw-noisy" class="pix" width="128" height="128" alt="x_t"><figcaption id="fw-caption">x<sub>t</sub></figcaption></figure>
  <figure><canvas id="fw-snr" width="300" height="200"></canvas><figcaption>log SNR(t) of each schedule</figcaption></figure>
  <figure><canvas id="fw-spectrum" width="300" height="200"></canvas><figcaption>power spectrum: signal (blue) vs noise floor (red)</figcaption></figure>
</div>
<div class="explain">A clean image is mixed with Gaussian noise:
<span class="eq">x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   SNR(t) = abar_t / (1 - abar_t)</span>
The cosine schedule spends more steps at useful noise levels than the linear one; at higher resolution the same
per-pixel noise destroys less, so simple diffusion shifts log SNR by 2 ln(32 / resolution). The spectrum shows why
fine detail goes first: natural images have little power at high frequencies, and the flat noise floor covers them before the coarse shapes.</div>
<div class="status" id="fw-status"></div>
</section>

<section id="panel-world" data-panel="world">
<h2>2. The 2-D world</h2>
<div class="row">
  <div class="controls">
    <label for="w2-sigma">sigma (log scale)</label><input id="w2-sigma" type="range" min="-2.5" max="1" step="0.05" value="-0.3">
    <label for="w2-den">trajectories of</label><select id="w2-den"><option value="exact">exact denoiser</option><option value="learned">learned MLP</option></select>
    <label for="w2-steps">steps</label><input id="w2-steps" type="number" min="2" max="60" value="12">
    <label for="w2-seed">seed</label><input id="w2-seed" type="number" min="0" value="0">
    <label for="w2-t">posterior t</label><input id="w2-t" type="range" min="1" max="999" value="600">
    <span></span><button id="w2-play">animate</button>
  </div>
  <figure><canvas id="w2-field" width="340" height="340"></canvas><figcaption>D(x, sigma) - x: exact (black) vs learned MLP (orange)</figcaption></figure>
  <figure><canvas id="w2-traj" width="340" height="340"></canvas><figcaption>trajectories from the same noise: ODE (solid) vs SDE (dashed)</figcaption></figure>
  <figure><canvas id="w2-post" width="260" height="260"></canvas><figcaption id="w2-post-caption">DDPM posterior mean vs the line x0 - x_t</figcaption></figure>
  <figure><canvas id="w2-like" width="300" height="200"></canvas><figcaption>E log p_r(data) (blue) and KL (red) over the model radius r</figcaption></figure>
</div>
<div class="explain">On a mixture of 8 Gaussians everything is exact. Tweedie's formula makes the ideal denoiser the score:
<span class="eq">D(x, sigma) = E[x_0 | x] = x + sigma^2 grad log p_sigma(x)</span>
Samplers integrate the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Euler, Heun, DPM-Solver++) or its SDE
(fresh noise at each step: Euler ancestral, DPM++ SDE, DDPM); the small dots are the x<sub>0</sub> estimates D(x_i, sigma_i) at each step.
The DDPM posterior mean
<span class="eq">mu~(x_t, x_0) = c1 x_0 + c2 x_t,  c1 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),  c2 = sqrt(alpha_t)(1 - abar_{t-1}) / (1 - abar_t)</span>
has c1 + c2 &lt; 1: it is not on the line between x_0 and x_t, and leaves it further as t grows.
Training is maximum likelihood: max E_data log p_model = min KL(p_data || p_model), since KL = E log p_data - E log p_model;
the last chart shows both, exactly, for models that are the ring at radius r (the data's ring has r = 1.414).</div>
<div class="status" id="w2-status"></div>
</section>

<section id="panel-guidance" data-panel="guidance">
<h2>3. Guidance geometry</h2>
<div class="row">
  <div class="controls">
    <label for="gd-w">w</label><input id="gd-w" type="range" min="0" max="8" step="0.25" value="3">
    <label for="gd-sigma">sigma (log scale)</label><input id="gd-sigma" type="range" min="-2" max="1" step="0.05" value="-0.3">
    <label for="gd-cls">class</label><select id="gd-cls"><option value="0">0 (even modes)</option><option value="1">1 (odd modes)</option></select>
  </div>
  <figure><canvas id="gd-field" width="340" height="340"></canvas><figcaption>conditional (blue), unconditional (grey), CFG (red)</figcaption></figure>
  <figure><canvas id="gd-samples" width="340" height="340"></canvas><figcaption>samples: CFG (red), classifier (green), autoguidance (purple)</figcaption></figure>
</div>
<div class="explain">Classifier-free guidance extrapolates from the unconditional to the conditional denoiser:
<span class="eq">D_w = D_u + w (D_c - D_u)</span>
w = 1 is the conditional model; w &gt; 1 pushes past it, towards the modes of the class and away from the others.
Classifier guidance adds w sigma^2 grad log p(c | x) of a (here blurrier) classifier; autoguidance extrapolates away from a
weaker model of the same task: D_bad + w (D_good - D_bad).</div>
<div class="status" id="gd-status"></div>
</section>

<section id="panel-sample" data-panel="sample">
<h2>4. Sampling real models</h2>
<div class="row">
  <div class="controls">
    <label for="sm-model">model</label><select id="sm-model"></select>
    <label for="sm-sampler">sampler</label><select id="sm-sampler">${samplerOptions(samplers, 'dpmpp-2m')}</select>
    <label for="sm-steps">steps</label><input id="sm-steps" type="number" min="1" max="1000" value="10">
    <label for="sm-n">images</label><input id="sm-n" type="number" min="1" max="64" value="10">
    <label for="sm-seed">seed</label><input id="sm-seed" type="number" min="0" value="0">
    <label for="sm-class">class</label><input id="sm-class" placeholder="all / id / none" value="">
    <label for="sm-guidance">guidance w</label><input id="sm-guidance" placeholder="none" value="">
    <button id="sm-run">sample</button><button id="sm-cancel" disabled>cancel</button>
  </div>
  <figure><img id="sm-x0" class="pix" alt="x0 estimate"><figcaption id="sm-caption">the x0 estimate at each step, then the samples</figcaption></figure>
</div>
<div class="explain">At every step the sampler asks the network for its estimate of the clean image, Tweedie's x<sub>0</sub>:
<span class="eq">x0_hat = D(x_t, sigma_t),  then x_{next} = x0_hat + (sigma_next / sigma_t)(x_t - x0_hat)   (DDIM / Euler)</span>
The picture streams that estimate as it sharpens, from the blurry average of the data at high sigma to a sample at sigma = 0.</div>
<div class="status" id="sm-status"></div>
</section>

<section id="panel-reports" data-panel="reports">
<h2>5. Steps against quality</h2>
<div class="row">
  <div class="controls">
    <label for="rp-metric">metric</label><select id="rp-metric"></select>
    <label for="rp-x">against</label><select id="rp-x"><option value="nfe">NFE</option><option value="lognfe">NFE, log-log</option><option value="guidance">guidance w</option></select>
  </div>
  <figure><canvas id="rp-chart" width="520" height="300"></canvas><figcaption id="rp-caption">evaluation reports found under runs/ and models/</figcaption></figure>
</div>
<div class="explain">Each point is one <code>diffuse eval</code> setting: the Frechet distance (FD), KID or precision / recall of the samples
in a classifier's feature space, against the denoiser evaluations per sample (NFE) or the guidance weight. Lower FD at fewer NFE is
what a better sampler or a distilled student buys.</div>
<div class="status" id="rp-status"></div>
</section>
<script src="/lab.js"></script>
</body></html>
`;
}
