# The two example services as a bake file: the same images as
# docker-compose.core-services.yml (same contexts, build args and tags), with a group,
# variables, inheritance and a matrix. From the repository root:
#
#   rbuild bake -f examples/docker-bake.hcl --print
#   REGISTRY=127.0.0.1:5000/me TAG=v1 rbuild bake -f examples/docker-bake.hcl --push
#
# `docker buildx bake -f examples/docker-bake.hcl` reads it the same way.

variable "REGISTRY" {
  description = "Where the images are pushed"
  default     = "127.0.0.1:5000"
}

variable "TAG" {
  default = "latest"
}

variable "BASE_IMAGE" {
  description = "The Node.js 20 base image of both Dockerfiles"
  default     = "127.0.0.1:5000/library/node:20-slim"
}

variable "DIR" {
  description = "The examples directory, relative to where bake runs (contexts are, as in buildx)"
  default     = "examples"
}

group "default" {
  description = "Both services"
  targets     = ["services"]
}

# What every service shares.
target "_node" {
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE = BASE_IMAGE
  }
}

target "services" {
  inherits = ["_node"]
  name     = svc
  matrix = {
    svc = ["auth-service", "user-service"]
  }
  context = "${DIR}/${svc}"
  tags    = ["${REGISTRY}/examples/${svc}:${TAG}"]
}
