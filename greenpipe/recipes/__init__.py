"""Recipes: one module per system greenpipe carries (model, data, loss, metric, boundaries)."""

from greenpipe.recipes.base import RECIPES, Recipe, get_recipe
from greenpipe.recipes import denoise  # noqa: F401  (registers "denoise")
from greenpipe.recipes import video  # noqa: F401  (registers "video"; TensorFlow loads only when used)
from greenpipe.recipes import segment  # noqa: F401  (registers "segment")
from greenpipe.recipes import detect  # noqa: F401  (registers "detect")

__all__ = ["RECIPES", "Recipe", "get_recipe"]
