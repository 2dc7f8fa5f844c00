"""The model layer: the `LanguageModel` base class and registry (`base`), the shared settings
(`config`), the blocks variants share (`layers`), decoding (`decoding`), option checks
(`optioncheck`), property checks (`properties`), and one module per variant family.

Variants are registered explicitly: each family module below defines `<Family>LM` classes with
`@register_variant(name)`, and this file imports every family by name, so the list of
families is this import list and importing anything from `unified.models` fills the registry
(the property tests then cover every registered variant).
"""
from unified.models.base import (IGNORE_INDEX, VARIANTS, BodyOutput, LanguageModel, LMOutput, create_model,
                                 model_from_description, register_variant, resolve_variant, split_overrides,
                                 variant_names)

# ---- the variant families, in ladder order (explicit: one line per family) ------------------------
from unified.models import transformer  # noqa: E402  baseline, shared_loop
from unified.models import latent  # noqa: E402  latent, act
from unified.models import ssm  # noqa: E402  ssm, ssm_mem
from unified.models import reservoir  # noqa: E402  reservoir
from unified.models import liquid  # noqa: E402  liquid
from unified.models import hrnn  # noqa: E402  hrnn
from unified.models import rsm  # noqa: E402  rsm

FAMILIES = (transformer, latent, ssm, reservoir, liquid, hrnn, rsm)

__all__ = ["IGNORE_INDEX", "VARIANTS", "BodyOutput", "LanguageModel", "LMOutput", "create_model",
           "model_from_description", "register_variant", "resolve_variant", "split_overrides", "variant_names",
           "FAMILIES"]
