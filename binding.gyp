{
  "targets": [
    {
      "target_name": "diffuse_native",
      "sources": [
        "native/addon.cc",
        "native/create.cc",
        "native/ops.cc",
        "native/nn.cc",
        "native/autograd.cc",
        "native/optim.cc",
        "native/profile.cc",
        "native/dist.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/torch-paths.js include)"
      ],
      "libraries": ["<!@(node scripts/torch-paths.js libs)"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-frtti", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "<!@(node scripts/torch-paths.js defines)"
      ]
    }
  ]
}
