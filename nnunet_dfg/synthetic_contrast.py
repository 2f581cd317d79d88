"""Tissue intensities of the synthetic benchmark's two domains, derived from physics rather than from any result.

Why a module of its own: the benchmark is only as good as the contrast it poses, and every number here must be
traceable to a source, not to what a pipeline run did with it. No value below was chosen by looking at a model.

**Source: fat-suppressed T2 MRI, like CHAOS T2-SPIR.** Each tissue's signal follows the spin-echo equation
``S = k * PD * (1 - exp(-TR / T1)) * exp(-TE / T2)`` at TR 2000 ms and TE 80 ms (a typical abdominal T2 turbo spin
echo; the project does not know CHAOS's exact protocol). Relaxation times at 1.5 T are de Bazelaire et al.,
Radiology 2004;230:652-659 (liver T1 586 / T2 46 ms, spleen 1057 / 79, renal cortex 966 / 87 and medulla 1412 / 85,
averaged for the kidney, skeletal muscle 856 / 27, subcutaneous fat 343 / 58). Free fluid (CSF, bile) takes the
usual free-water values (T1 ~4000, T2 ~2000 ms); bowel contents are taken as fluid-rich (T1 1500, T2 100: an
assumption). Proton densities are approximate water contents (0.7-0.8 for parenchyma, 1 for fluid). SPIR leaves
~8 % of the fat signal (spectral suppression is incomplete); vertebral marrow is ~60 % fat in adults, so it is
suppressed too; cortical bone and gas give no signal; flowing blood is a flow void (spin-echo wash-out). The scale
``k`` puts free fluid near 1000, on the [0, 1200] range the DFG reference clips CHAOS T2-SPIR to. This yields what
T2-SPIR shows: fluid brightest, kidney and spleen bright, the liver intermediate and darker than the spleen, muscle
dark, fat darker than muscle, vessels dark. Rician noise (magnitude images) and a smooth multiplicative coil bias.

**Target: portal-venous CT in HU.** Textbook attenuation ranges of contrast-enhanced abdominal CT (e.g. Bae,
Radiology 2010;256:32-61 on enhancement timing): fat -100 (intra-abdominal fat -90), muscle 50, liver 105 (100-110 in
the portal-venous phase), spleen 118 (110-125), kidney 170 (150-200, nephrographic enhancement), enhanced vessels 165
(150-180), vertebral body 350 and cortical bone 900 (300-1000), bowel wall and unopacified contents 30, fluid
(bile, CSF) 10, bowel gas -900 (<= -800), air -1000. Quantum noise sigma 15 HU (10-20 HU at routine dose), spatially
correlated by the reconstruction kernel; a 1 mm in-plane PSF.
"""
from __future__ import annotations

import numpy as np

AIR, FAT, MUSCLE, VISC, BOWEL, GAS, BONE, CORTEX, FLUID, VESSEL, SPLEEN, KIDNEY, LIVER = range(13)
ORGANS = (SPLEEN, KIDNEY, LIVER)
TISSUE_NAMES = ("air", "fat", "muscle", "visceral fat", "bowel", "gas", "vertebral body", "cortical bone", "fluid",
                "vessel", "spleen", "kidney", "liver")

MR_TR_MS, MR_TE_MS = 2000.0, 80.0
SPIR_FAT_RESIDUAL = 0.08
MR_SCALE = 2600.0  # free fluid -> ~980, inside CHAOS T2-SPIR's [0, 1200]
# (proton density, T1 ms, T2 ms, fat fraction) per tissue code; PD 0 = no signal
MR_TISSUES = {
    AIR: (0.0, 1000.0, 1.0, 0.0),
    FAT: (0.90, 343.0, 58.0, 1.0),
    MUSCLE: (0.75, 856.0, 27.0, 0.0),
    VISC: (0.90, 343.0, 58.0, 0.95),  # mesenteric fat: a few percent water (septa, vessels)
    BOWEL: (0.85, 1500.0, 100.0, 0.0),
    GAS: (0.0, 1000.0, 1.0, 0.0),
    BONE: (0.60, 600.0, 40.0, 0.6),  # adult vertebral marrow: ~60 % fat, short-T2 water
    CORTEX: (0.0, 1000.0, 1.0, 0.0),
    FLUID: (1.0, 4000.0, 2000.0, 0.0),
    VESSEL: (0.04, 1500.0, 250.0, 0.0),  # flow void: only a few percent of blood's signal survives wash-out
    SPLEEN: (0.79, 1057.0, 79.0, 0.0),
    KIDNEY: (0.80, 1189.0, 86.0, 0.0),
    LIVER: (0.71, 586.0, 46.0, 0.0),
}
CT_HU = {AIR: -1000.0, FAT: -100.0, MUSCLE: 50.0, VISC: -90.0, BOWEL: 30.0, GAS: -900.0, BONE: 350.0,
         CORTEX: 900.0, FLUID: 10.0, VESSEL: 165.0, SPLEEN: 118.0, KIDNEY: 170.0, LIVER: 105.0}
CT_NOISE_HU = 15.0
CT_PSF_MM = 1.0
MR_RICIAN_SIGMA = 18.0  # liver SNR ~17, fluid ~55
MR_BIAS_RANGE = (0.15, 0.3)  # amplitude of the smooth log-bias field


def t2_spin_echo_signal(pd: float, t1: float, t2: float, fat_fraction: float = 0.0, tr: float = MR_TR_MS,
                        te: float = MR_TE_MS, fat_residual: float = SPIR_FAT_RESIDUAL) -> float:
    """Spin-echo signal of a tissue, its fat share scaled by what fat suppression leaves."""
    signal = pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return float(signal * (1.0 - fat_fraction + fat_fraction * fat_residual))


def source_means() -> np.ndarray:
    """T2-SPIR-like tissue means in positive scanner units, indexed by tissue code."""
    return np.array([MR_SCALE * t2_spin_echo_signal(*MR_TISSUES[code]) for code in range(len(TISSUE_NAMES))])


def target_means() -> np.ndarray:
    """Portal-venous CT tissue means in HU, indexed by tissue code."""
    return np.array([CT_HU[code] for code in range(len(TISSUE_NAMES))])


SOURCE_MEANS = source_means()
TARGET_MEANS = target_means()
