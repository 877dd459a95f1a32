from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from chat.forms import StaffAuthenticationForm
from chat.views import health
from config.api import api


def _api_urls():
    """The API authenticates by itself (token or session) and answers 401 JSON, not a redirect."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.callback is not None:
            login_not_required(pattern.callback)
    return patterns, app_name, namespace


urlpatterns = [
    path("health", health, name="health"),
    path(
        "login/",
        auth_views.LoginView.as_view(authentication_form=StaffAuthenticationForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", _api_urls()),
    path("attachments/", include("attachments.urls")),
    path("models/", include("presets.urls")),
    path("", include("chat.urls")),
]
