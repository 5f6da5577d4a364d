"""The scale plot: time against regions (up and no-change preview, with min–max bars,
the fitted lines and the empty-program baseline), and peak memory against regions."""

from __future__ import annotations

from pathlib import Path


def _get(summary, key: str) -> float:
    return (
        summary[key]
        if isinstance(summary, dict)
        else getattr(summary, {"min": "lo", "max": "hi"}.get(key, key))
    )


def _fit(fit, attr: str) -> float:
    return fit[attr] if isinstance(fit, dict) else getattr(fit, attr)


def scale_plot(scale: dict, path: Path, title_note: str = "") -> Path | None:
    points = scale.get("points") or {}
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(int(k) for k in points)
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(12, 6), gridspec_kw={"width_ratios": [3, 2]})

    def fit_line(fit, style: str, color: str) -> str:
        if fit is None:
            return ""
        slope, icpt = _fit(fit, "slope"), _fit(fit, "intercept")
        ax.plot(
            [xs[0], xs[-1]],
            [icpt + slope * xs[0], icpt + slope * xs[-1]],
            style,
            color=color,
            linewidth=1,
        )
        return f", fit {slope:+.2f} s/region"

    top = 0.0
    for key, label, color, fit_key in (
        ("up", "dbfleet up, from nothing", "tab:blue", "fit_up"),
        ("preview", "dbfleet preview, no change", "tab:orange", "fit_preview"),
        ("floor_preview", "empty program, 4 previews (baseline)", "tab:gray", "fit_floor_preview"),
    ):
        med = [_get(points[str(x)][key], "median") for x in xs]
        lo = [m - _get(points[str(x)][key], "min") for m, x in zip(med, xs, strict=True)]
        hi = [_get(points[str(x)][key], "max") - m for m, x in zip(med, xs, strict=True)]
        top = max(top, *(m + h for m, h in zip(med, hi, strict=True)))
        note = fit_line(scale.get(fit_key), "--", color)
        ax.errorbar(xs, med, yerr=[lo, hi], fmt="o", color=color, capsize=3, label=f"{label}{note}")
    for key, label, color in (
        ("up_normalized", "up at a common load", "tab:cyan"),
        ("preview_normalized", "preview at a common load", "tab:red"),
    ):
        ys = scale.get(f"series_{key}")
        if ys:
            top = max(top, *ys)
            note = fit_line(scale.get(f"fit_{key}"), ":", color)
            ax.plot(xs, ys, "D", mfc="none", color=color, label=f"{label}{note}")
    ax.set_xlabel("regions in the group (one node each)")
    ax.set_ylabel("seconds (median, bars: min–max)")
    ax.set_xticks(xs)
    ax.set_ylim(0, top * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_title("time against regions" + (f" — {title_note}" if title_note else ""), fontsize=10)
    for key, label, color in (
        ("up_memory", "during up", "tab:blue"),
        ("preview_memory", "during preview", "tab:orange"),
    ):
        ys = [((points[str(x)].get(key) or {}).get("pulumi_total_mb")) for x in xs]
        if all(y is not None for y in ys):
            axm.plot(xs, ys, "o-", color=color, label=label)
    axm.set_xlabel("regions in the group")
    axm.set_ylabel("MiB, peak RSS (engine + language host + program + providers)")
    axm.yaxis.label.set_size(8)
    axm.set_xticks(xs)
    axm.set_ylim(bottom=0)
    axm.grid(alpha=0.3)
    axm.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    axm.set_title("peak memory", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
