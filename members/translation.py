"""Fields merchants write once per language (en, 简体, 繁體, 한국어), via django-modeltranslation."""

from modeltranslation.translator import TranslationOptions, register

from members.models import Category


@register(Category)
class CategoryTranslation(TranslationOptions):
    fields = ("name",)
