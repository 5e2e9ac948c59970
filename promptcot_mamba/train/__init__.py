"""Two-phase curriculum fine-tuning (paper §2.2, §3.4): recipes, data, trainer, distributed, checkpoints.

    from promptcot_mamba.train import Recipe, run_recipe
    result = run_recipe(Recipe.from_yaml("recipes/tiny-cpu.yaml"), "runs/tiny")
    result.checkpoints  # {"initialization": ".../hf", "advanced": ".../hf"}

Import-safe: nothing heavy happens at import time.
"""

from promptcot_mamba.train.recipe import Recipe, RecipeError, list_recipes
from promptcot_mamba.train.runner import RunResult, run_recipe

__all__ = ["Recipe", "RecipeError", "RunResult", "run_recipe", "list_recipes"]
