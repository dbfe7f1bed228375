"""Whether the work beside a CPU forward runs in the forward's gaps ("phased") or overlapped with it.

On a 2-core box a thread decoding (or drawing, or writing) beside a 2-thread torch forward stalls the
forward's OpenMP team at every barrier: ResNet-50 lost 6-8 % that way in ``dgml-viz index`` (issue 16),
whatever the helper threads' count or priority. When the forward
dwarfs the other work, running that work between forwards with every thread costs only its own CPU time;
when it does not (a light model such as the demo's, or a GPU forward that leaves the cores free),
overlapping is faster. :mod:`dgml_viz.index.builder` decides here after its first batch. (``heatmaps``
does not: its decode + draw + write are ~12 % of a ResNet-50 forward's CPU, and running them in the
gaps measured no faster than overlapping them; see bench/RESULTS.md.)
"""
from __future__ import annotations

#: the other work goes in the gaps when its CPU seconds per image are under this share of the forward's
PHASED_SHARE = 0.1


def runs_phased(other_s_per_image: float, forward_s_per_image: float) -> bool:
    """Whether a CPU forward of ``forward_s_per_image`` dwarfs the ``other_s_per_image`` of work beside it
    (under :data:`PHASED_SHARE` of it), so that work should run between forwards, not during them."""
    return other_s_per_image < PHASED_SHARE * forward_s_per_image
