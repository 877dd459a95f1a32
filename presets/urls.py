from django.urls import path

from presets import views

app_name = "presets"
urlpatterns = [
    path("", views.page, name="page"),
    path("picker/", views.picker, name="picker"),
    path("picker/choose", views.choose_model, name="choose"),
    path("picker/favourite", views.toggle_favourite, name="favourite"),
    path("settings/", views.settings_panel, name="settings"),
    path("presets/", views.presets_panel, name="presets"),
    path("presets/save", views.save_preset, name="save"),
    path("presets/<str:name>/apply", views.apply_preset, name="apply"),
    path("presets/<str:name>/set-default", views.set_default_preset, name="set_default"),
    path("presets/<str:name>/delete", views.delete_preset, name="delete"),
    path("suggestions/", views.suggestions, name="suggestions"),
    path(
        "messages/<int:message_id>/details",
        views.generation_details,
        name="generation_details",
    ),
]
